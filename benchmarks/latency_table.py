"""How well does the per-layer lookup table rank architectures by latency, and what does it save?

Samples architectures from every family, measures each (kdnas.costs.measure_latency) and estimates each from
the lookup table (kdnas.costs.LatencyTable, built from scratch in a temporary file), in one process, and
prints the Spearman rank correlation between the two, the estimate / measured ratios, and the seconds spent
building the table, estimating from the full table and measuring.

    PYTHONPATH=. python benchmarks/latency_table.py --archs 24
    PYTHONPATH=. python benchmarks/latency_table.py --archs 16 --input 3,32,32
    PYTHONPATH=. python benchmarks/latency_table.py --smoke   # 3 architectures, brief timings: a check in seconds
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from kdnas.costs import LatencySetting, LatencyTable, measure_latency
from kdnas.models import build, make_spec


def sample(rng: random.Random) -> dict:
    family = rng.choice(["resnet_cifar", "plain_cnn", "mobilenetv2"])
    if family == "resnet_cifar":
        return {"family": family, "depth": rng.choice([8, 14, 20, 26]), "width": rng.choice([0.25, 0.5, 0.75, 1.0])}
    if family == "plain_cnn":
        depth = rng.randint(2, 6)
        return {"family": family, "channels": [rng.choice([8, 16, 32, 64]) for _ in range(depth)],
                "pool_every": rng.choice([1, 2]), "kernel_size": rng.choice([3, 5])}
    return {"family": family, "width": rng.choice([0.25, 0.5, 0.75]), "expansion": rng.choice([2, 4, 6]),
            "blocks": [rng.randint(1, 2) for _ in range(rng.randint(2, 4))], "kernel_size": rng.choice([3, 5])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=24)
    ap.add_argument("--input", default="1,8,8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=3.0, help="per measured architecture")
    ap.add_argument("--smoke", action="store_true", help="a check in seconds (tests/test_benchmarks.py runs it): "
                    "3 architectures, 0.05-0.2 s each; figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.archs, args.max_seconds = 3, 0.2
    shape = tuple(int(v) for v in args.input.split(","))
    rng = random.Random(args.seed)
    specs = [make_spec(sample(rng)) for _ in range(args.archs)]
    setting = LatencySetting(min_seconds=min(0.3, args.max_seconds / 4), max_seconds=args.max_seconds)
    tmp = tempfile.TemporaryDirectory(prefix="kdnas-latency-table-")
    table = LatencyTable(Path(tmp.name) / "table.json")

    t0 = time.perf_counter()
    for spec in specs:  # builds the table: every new layer is timed once
        table.estimate(build(spec, shape, 10), shape, setting)
    t1 = time.perf_counter()
    estimated = [table.estimate(build(spec, shape, 10), shape, setting) for spec in specs]
    t2 = time.perf_counter()
    measured = [measure_latency(build(spec, shape, 10), shape, setting).latency_ms for spec in specs]
    t3 = time.perf_counter()

    for spec, e, m in sorted(zip(specs, estimated, measured), key=lambda r: r[2]):
        print(f"  measured {m:8.3f} ms  estimated {e:8.3f} ms  ratio {e / m:5.2f}  {spec.label()}")
    ratio = np.array(estimated) / np.array(measured)
    rho = spearmanr(estimated, measured).statistic
    print(f"\n{args.archs} architectures on {args.input}, batch 1, 1 thread, cpu")
    print(f"  Spearman rank correlation, estimate vs measured: {rho:.3f}")
    print(f"  estimate / measured: median {np.median(ratio):.2f}, range {ratio.min():.2f} to {ratio.max():.2f}")
    print(f"  seconds: building the table {t1 - t0:.1f}, estimating all from it {t2 - t1:.2f}, measuring all {t3 - t2:.1f}")


if __name__ == "__main__":
    main()
