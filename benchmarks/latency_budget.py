"""What a study's latency budget (``costs.latency.max_seconds``) buys: time against precision, per cap.

A study without a spare core measures each new candidate in its own process right after training it
(docs/costs.md, "In a study"). This script does the same: for each of six students of the mnist5k space and
each cap in ``--caps``, it trains a MobileNetV2 student with 2 threads for ``--burn`` seconds (as a study at
``threads: 2`` does), then measures the student with the study's rule (``min_seconds`` 0.3, ``max_seconds``
the cap) and records the figure, whether it was confirmed, and the seconds it took (building the copies
included). The caps alternate in order from round to round. The reference for each student is what
`kdnas profile` ships: a 10-s measurement in a fresh, otherwise idle process, taken ``--quiet`` times (the
median is the reference; how much those fresh processes differ among themselves is printed too, since no
study figure can be expected to come closer to the reference than the reference to itself).

Printed per cap: mean seconds per measurement, how many were confirmed, and the error against the
reference (median, 90th percentile and largest absolute error; how many within 5 % and 10 %).

    PYTHONPATH=. python benchmarks/latency_budget.py [--caps 1,1.5,2,3] [--rounds 2] [--burn 8] [--quiet 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

SHAPE = _studies.MNIST_SHAPE
STUDENTS = _studies.LATENCY_STUDENTS
BURNER = {"family": "mobilenetv2", "blocks": [1, 1, 1], "expansion": 4, "kernel_size": 5, "width": 0.5}


def _quiet_child(raw: str) -> None:
    """Child process: `kdnas profile`'s measurement (10 s, one thread) of one student; print its figures."""
    from kdnas import _malloc

    _malloc.tune()
    import torch

    from kdnas.costs import LatencySetting, measure_latency
    from kdnas.models import build, make_spec

    torch.set_num_threads(1)
    model = build(make_spec(json.loads(raw)), SHAPE, 10)
    print(json.dumps(measure_latency(model, SHAPE, LatencySetting(min_seconds=10, max_seconds=10)).to_dict()))


def _quiet(student: dict) -> float:
    out = subprocess.run([sys.executable, __file__, "quiet", json.dumps(student)], capture_output=True, text=True,
                         env=_studies.child_env())
    if out.returncode:
        sys.exit(f"the reference measurement failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["latency_ms"]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "quiet":
        _quiet_child(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default="1,1.5,2,3", help="max_seconds values to compare, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--burn", type=float, default=8.0, help="seconds of 2-thread training before each measurement")
    ap.add_argument("--quiet", type=int, default=2, help="reference measurements per student (fresh processes)")
    args = ap.parse_args()
    caps = [float(c) for c in args.caps.split(",")]

    from kdnas import _malloc

    _malloc.tune()  # as a study's process
    import torch

    from kdnas.costs import LatencySetting, measure_latency
    from kdnas.models import build, make_spec

    torch.set_num_threads(2)  # the training bursts: as a study at `threads: 2` (a measurement sets its own)
    print(f"{len(STUDENTS)} students x {args.rounds} rounds x caps {caps}, {args.burn:g} s of 2-thread training "
          f"before each measurement; {_studies.machine()}", flush=True)
    rows = []
    for r in range(args.rounds):
        for i, raw in enumerate(STUDENTS):
            for cap in (caps if r % 2 == 0 else caps[::-1]):
                _studies.train_for(BURNER, args.burn)
                start = time.perf_counter()
                model = build(make_spec(raw), SHAPE, 10)
                figures = measure_latency(model, SHAPE, LatencySetting(min_seconds=0.3, max_seconds=cap))
                rows.append({"student": i, "cap": cap, "ms": figures.latency_ms, "stable": figures.latency_stable,
                             "seconds": time.perf_counter() - start})
                print(f"  round {r + 1} student {i} cap {cap:g}s: {figures.latency_ms:.3f} ms, "
                      f"{'confirmed' if figures.latency_stable else 'not confirmed'}, {rows[-1]['seconds']:.2f}s",
                      flush=True)
    reference = {}
    spreads = []
    for i, raw in enumerate(STUDENTS):
        quiet = [_quiet(raw) for _ in range(args.quiet)]
        reference[i] = statistics.median(quiet)
        spreads.append(max(quiet) / min(quiet) - 1)
        print(f"  reference of student {i} ({make_spec(raw).label()}): "
              f"{', '.join(f'{q:.3f}' for q in quiet)} ms", flush=True)
    print(f"\nreferences in fresh idle processes differ among themselves by (max/min - 1): median "
          f"{statistics.median(spreads):.1%}, largest {max(spreads):.1%}")
    for cap in caps:
        mine = [x for x in rows if x["cap"] == cap]
        errors = sorted(abs(x["ms"] / reference[x["student"]] - 1) for x in mine)
        p90 = errors[max(0, round(0.9 * len(errors)) - 1)]
        print(f"max_seconds {cap:g}: {statistics.mean(x['seconds'] for x in mine):.2f}s per measurement, "
              f"{sum(x['stable'] for x in mine)}/{len(mine)} confirmed; |error| against the reference: median "
              f"{statistics.median(errors):.1%}, 90th percentile {p90:.1%}, largest {errors[-1]:.1%}; "
              f"within 5 %: {sum(e <= 0.05 for e in errors)}/{len(errors)}, "
              f"within 10 %: {sum(e <= 0.10 for e in errors)}/{len(errors)}")


if __name__ == "__main__":
    main()
