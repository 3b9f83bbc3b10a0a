"""Every cost of one architecture, for ``kdnas profile``."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Callable

import torch

from kdnas.core import Collector, KdnasError, load_yaml, parse_section
from kdnas.costs._counts import COUNTERS, count
from kdnas.costs._latency import measure_latency
from kdnas.costs._setting import LatencySetting, resolve_device
from kdnas.costs._table import LatencyTable
from kdnas.costs._timing import _MIN_SAMPLES as MIN_SAMPLES
from kdnas.models import ArchSpec, build, make_spec


def load_arch(path: Path) -> ArchSpec:
    """An architecture file: one spec mapping such as ``{family: resnet_cifar, depth: 20}``."""
    return make_spec(load_yaml(path, "architecture file"), source=str(path))


def check_setting(raw: dict, where: str) -> LatencySetting:
    """A :class:`LatencySetting` from flag values, validated like the study file's section."""
    problems = Collector(where)
    setting = parse_section(LatencySetting, raw, "", problems.add)
    problems.raise_if_any()
    try:
        resolve_device(setting.device)
    except KdnasError as err:
        raise KdnasError(f"{where}: {err}") from None
    return setting


def profile(spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int, counter: str = "flop_counter",
            setting: LatencySetting | None = None, table: LatencyTable | None = None,
            say: Callable[[str], None] = lambda line: None) -> dict:
    """Params, MACs, FLOPs and (unless ``setting`` is None) measured latency, as one JSON-able dict; with a
    ``table``, also the lookup-table estimate ``latency_estimate_ms``."""
    if num_classes < 1:
        raise KdnasError(f"--classes: `classes >= 1` must hold, but got classes={num_classes}")
    COUNTERS.get(counter)  # unknown names fail here, listing the valid ones
    try:
        counts = count(spec, input_shape, num_classes, counter)
    except (RuntimeError, ValueError) as err:  # e.g. an input too small for the architecture's downsampling
        lines = str(err).strip().splitlines()
        raise KdnasError(f"{spec.label()} cannot run on inputs {input_shape}: {lines[0] if lines else err}") from None
    out = {"spec": spec.to_dict(), "label": spec.label(), "input_shape": list(input_shape), "num_classes": num_classes,
           "counter": counter, "params": counts.params, "macs": counts.macs, "flops": counts.flops}
    if setting is not None:
        with torch.random.fork_rng(devices=[]):
            model = build(spec, input_shape, num_classes)
        out["latency_setting"] = setting.identity()
        # A large network takes seconds a pass: say what is being waited for, and for how long at most.
        say(f"measuring the latency of {spec.label()} on {setting.device} for {setting.min_seconds:g}-"
            f"{setting.max_seconds:g} s (--max-seconds) ...")
        if table is not None:
            out["latency_estimate_ms"] = table.estimate(copy.deepcopy(model), input_shape, setting)
        out.update(measure_latency(model, input_shape, setting).to_dict())
    return out


def format_profile(p: dict) -> str:
    """The human-readable form of :func:`profile`'s dict."""
    shape = "x".join(str(s) for s in p["input_shape"])
    lines = [
        f"{p['label']} on {shape} inputs, {p['num_classes']} classes",
        f"  params   {p['params']:>14,}",
        f"  MACs     {p['macs']:>14,}   multiply-accumulates per input, counted by {p['counter']}",
        f"  FLOPs    {p['flops']:>14,}   2 per multiply-accumulate",
    ]
    if "latency_ms" in p:
        s = p["latency_setting"]
        threads = f"{s['threads']} thread{'s' if s['threads'] > 1 else ''}"
        lines.append(f"  latency  {p['latency_ms']:>11.3f} ms   per batch of {s['batch_size']} on {s['device']}, {threads}, "
                     f"{s['dtype']}: the floor of {p['latency_calls']:,} passes in {p['latency_seconds']:.1f} s "
                     f"(their median {p['latency_median_ms']:.3f} ms, IQR {p['latency_iqr_ms']:.3f} ms)")
        if "latency_estimate_ms" in p:
            lines.append(f"  estimate {p['latency_estimate_ms']:>11.3f} ms   sum of the layers in the lookup table "
                         f"(no residual adds or Python overhead: for ranking)")
        if not p["latency_stable"] and p["latency_calls"] < MIN_SAMPLES:
            lines.append(f"  warning: the latency floor was not confirmed: only {p['latency_calls']} passes fit in "
                         f"max_seconds (a floor needs {MIN_SAMPLES}); raise --max-seconds to about "
                         f"{math.ceil(1.2 * MIN_SAMPLES / p['latency_calls'] * p['latency_seconds'])}")
        elif not p["latency_stable"]:
            lines.append("  warning: the latency floor was not confirmed before max_seconds: the machine was busy "
                         "throughout; run again on a quieter machine or raise --max-seconds")
    return "\n".join(lines)
