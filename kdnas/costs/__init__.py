"""Costs of an architecture: parameters, MACs/FLOPs (counter selectable), measured latency and its cache;
and how a study weighs them against accuracy: the objectives, Pareto fronts, hypervolume, the combined score.

Units are explicit in every name: ``params`` (count), ``macs`` (multiply-accumulates), ``flops`` (2 per
multiply-accumulate), ``latency_ms`` (milliseconds per batch).
"""

from kdnas.costs._background import AFTER, BESIDE, HERE, LatencyService, measuring_place
from kdnas.costs._config import CostsConfig
from kdnas.costs._counts import COUNTERS, Counts, count
from kdnas.costs._efficiency import ATTR as EFFICIENCY_ATTR
from kdnas.costs._efficiency import COMPRESSION, EFFICIENCY_KEYS, distillation_efficiency
from kdnas.costs._efficiency import recorded as recorded_efficiency
from kdnas.costs._latency import LatencyCache, Pending, measure_latency
from kdnas.costs._profile import check_setting, format_profile, load_arch, profile
from kdnas.costs._setting import DEVICE, DTYPES, Latency, LatencySetting, resolve_device
from kdnas.costs._table import LatencyTable
from kdnas.costs._timing import Chain, measure_calls
from kdnas.costs._score import (DIRECTIONS, METRIC_NAMES, ScoreConfig, combined_score, constraints, feasible, hypervolume,
                               hypervolume_history, measured_front, normalise, pareto_mask)

__all__ = [
    "AFTER", "BESIDE", "Chain", "COMPRESSION", "distillation_efficiency", "EFFICIENCY_ATTR", "EFFICIENCY_KEYS",
    "recorded_efficiency", "check_setting", "combined_score", "constraints", "CostsConfig", "count",
    "COUNTERS", "Counts", "DEVICE", "DIRECTIONS", "DTYPES", "feasible", "format_profile", "HERE", "hypervolume",
    "hypervolume_history", "Latency", "LatencyCache", "LatencyService", "LatencySetting", "LatencyTable",
    "load_arch", "measure_calls", "measure_latency", "measured_front", "measuring_place", "METRIC_NAMES", "Pending",
    "normalise", "pareto_mask", "profile", "resolve_device", "ScoreConfig",
]
