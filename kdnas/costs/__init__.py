"""Costs of an architecture: parameters, MACs/FLOPs (counter selectable), measured latency and its cache.

Units are explicit in every name: ``params`` (count), ``macs`` (multiply-accumulates), ``flops`` (2 per
multiply-accumulate), ``latency_ms`` (milliseconds per batch).
"""

from kdnas.costs._background import AFTER, BESIDE, HERE, LatencyService, measuring_place
from kdnas.costs._config import CostsConfig
from kdnas.costs._counts import COUNTERS, Counts, count
from kdnas.costs._latency import LatencyCache, measure_latency
from kdnas.costs._setting import DEVICE, DTYPES, Latency, LatencySetting, resolve_device
from kdnas.costs._timing import Chain, measure_calls
from kdnas.costs._table import LatencyTable

__all__ = [
    "AFTER", "BESIDE", "COUNTERS", "Chain", "CostsConfig", "Counts", "DEVICE", "DTYPES", "HERE", "Latency",
    "LatencyCache", "LatencyService", "LatencySetting", "LatencyTable", "count", "measure_calls", "measure_latency",
    "measuring_place", "resolve_device",
]
