"""How long a latency measurement takes to settle right after training, in the training process.

Why kdnas measures a study's latencies in a background process (docs/costs.md, "In a study"): a study
measures each new candidate between two trainings. This script does the same in one process: it trains a
ResNet-14 for ``--burn`` seconds (one thread, MNIST-sized batches of 128), then measures one of six students
of the mnist5k space for a fixed ``--seconds`` (``min_seconds`` = ``max_seconds``, so every measurement runs
the full time), and prints where the floor estimate stood after 0.3, 0.5, 1, 2, 3 and 5 s, relative to where
it ended. Each student is measured ``--rounds`` times; the last column compares its final figures.

    PYTHONPATH=. python benchmarks/latency_after_training.py [--burn 10] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

import kdnas.costs._timing as timing  # noqa: E402
from kdnas.costs import LatencySetting, measure_latency  # noqa: E402
from kdnas.models import build, make_spec  # noqa: E402

STUDENTS = _studies.LATENCY_STUDENTS
MARKS = (0.3, 0.5, 1, 2, 3, 5)
SHAPE = _studies.MNIST_SHAPE
BURNER = {"family": "resnet_cifar", "depth": 14, "width": 0.75}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burn", type=float, default=10.0, help="seconds of training before each measurement")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{args.burn:g} s of training, then {args.seconds:g} s of measurement, per line; {_studies.machine()}")
    print("the raw floor estimate after t seconds, relative to its final value:")
    workloads: list = []
    original = timing._Workload.run

    def run(self, seconds: float) -> None:  # remember the workloads, to read their history afterwards
        original(self, seconds)
        workloads.append(self)

    timing._Workload.run = run
    setting = LatencySetting(min_seconds=args.seconds, max_seconds=args.seconds)
    finals: dict[str, list[float]] = {}
    worst = {m: 0.0 for m in MARKS}
    for _ in range(args.rounds):
        for raw in STUDENTS:
            _studies.train_for(BURNER, args.burn)
            spec = make_spec(raw)
            workloads.clear()
            result = measure_latency(build(spec, SHAPE, 10), SHAPE, setting)
            # The student's workload: the probe is the other one (fewer steps than any student here).
            student = max({id(w): w for w in workloads}.values(), key=lambda w: w.steps)
            history = student.history
            final = history[-1][1]
            at = {m: min(history, key=lambda p: abs(p[0] - m))[1] / final - 1 for m in MARKS}
            for m in MARKS:
                worst[m] = max(worst[m], at[m])
            finals.setdefault(spec.label(), []).append(result.latency_ms)
            print(f"  {spec.label()[:58]:58s} latency_ms {result.latency_ms:6.3f}  "
                  + " ".join(f"{m:g}s {at[m]:+6.1%}" for m in MARKS), flush=True)
    print("worst over all lines: " + ", ".join(f"after {m:g}s {worst[m]:+.1%}" for m in MARKS))
    spread = [max(v) / min(v) - 1 for v in finals.values() if len(v) > 1]
    if spread:
        print(f"final latency_ms of the same student across rounds: {min(spread):.1%} to {max(spread):.1%} apart")


if __name__ == "__main__":
    main()
