"""What a study's latency budget (``costs.latency.max_seconds``) buys, per place: time against precision.

A study without a spare core measures each new candidate right after training it, while it waits: in the
child process (``background: auto``, the default) or in its own process (``background: false``; and every
study before 2026-11-26). See docs/costs.md, "In a study". This script does both: for each of six students
of the mnist5k space, each place in ``--places``, each cap in ``--caps`` and each ``min_seconds`` in
``--mins``, it trains a MobileNetV2 student in this process with 2 threads for ``--burn`` seconds (as a study
at ``threads: 2`` does), then measures the student with the study's rule (``min_seconds`` 0.3 unless
``--mins`` says otherwise, ``max_seconds`` the cap), ``here`` (in this process) or in a ``child`` (kdnas's
LatencyService, started once, as a study starts it; this process waits), or in the child while this process
evaluates the student on 2,000 MNIST-sized images with one thread (``eval``: what a study at ``threads: 2``
on 2 cores does since 2026-11-26, ``Pending.meanwhile`` in kdnas/costs/_latency.py), and records the figure,
whether it was confirmed, and the seconds the caller waited for it (building the copies included; for
``eval``, after its evaluation, which is printed too). The order of the variants alternates from round to
round. The reference for each student is what `kdnas profile` ships: a 10-s measurement in a fresh,
otherwise idle process, taken ``--quiet`` times (the median is the reference; how much those fresh processes
differ among themselves is printed too, since no study figure can be expected to come closer to the
reference than the reference to itself).

Printed per variant: mean seconds per measurement (for ``eval``, the window too: evaluation and wait), how
many were confirmed, and the error against the reference (median, 90th percentile and largest absolute
error; how many within 5 % and 10 %).

    PYTHONPATH=. python benchmarks/latency_budget.py [--places here,child,eval] [--caps 1,2] [--mins 0.3]
                                                     [--rounds 2] [--burn 8] [--quiet 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

SHAPE = _studies.MNIST_SHAPE
STUDENTS = _studies.LATENCY_STUDENTS
BURNER = {"family": "mobilenetv2", "blocks": [1, 1, 1], "expansion": 4, "kernel_size": 5, "width": 0.5}


def _quiet_child(raw: str) -> None:
    """Child process: `kdnas profile`'s measurement (10 s, one thread) of one student; print its figures."""
    from kdnas.core import _malloc

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
    ap.add_argument("--places", default="here,child", help="where to measure: here (this process), child, eval "
                                                            "(in the child while this process evaluates)")
    ap.add_argument("--caps", default="1,2", help="max_seconds values to compare, comma-separated")
    ap.add_argument("--mins", default="0.3", help="min_seconds values to compare, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--burn", type=float, default=8.0, help="seconds of 2-thread training before each measurement")
    ap.add_argument("--quiet", type=int, default=2, help="reference measurements per student (fresh processes)")
    args = ap.parse_args()
    caps = [float(c) for c in args.caps.split(",")]
    places = args.places.split(",")
    if not set(places) <= {"here", "child", "eval"}:
        sys.exit(f"--places: expected here, child and/or eval, got {args.places!r}")
    mins = [float(m) for m in args.mins.split(",")]
    pairs = [(place, cap, least) for place in places for cap in caps for least in mins]

    from kdnas.core import _malloc

    _malloc.tune()  # as a study's process
    import torch

    from kdnas.costs import LatencyCache, LatencyService, LatencySetting, measure_latency
    from kdnas.data import TensorSource
    from kdnas.models import build, make_spec
    from kdnas.train import predict

    service = LatencyService() if {"child", "eval"} & set(places) else None
    images = TensorSource(torch.randn(2000, *SHAPE), torch.zeros(2000, dtype=torch.long))
    scratch = Path(tempfile.mkdtemp(prefix="kdnas-latency-budget-"))
    torch.set_num_threads(2)  # the training bursts: as a study at `threads: 2` (a measurement sets its own)
    print(f"{len(STUDENTS)} students x {args.rounds} rounds x places {places} x caps {caps} x min_seconds {mins}, "
          f"{args.burn:g} s of "
          f"2-thread training before each measurement; {_studies.machine()}", flush=True)
    rows = []
    for r in range(args.rounds):
        for i, raw in enumerate(STUDENTS):
            for place, cap, least in (pairs if r % 2 == 0 else pairs[::-1]):
                _studies.train_for(BURNER, args.burn)
                setting = LatencySetting(min_seconds=least, max_seconds=cap)
                start, evaluating = time.perf_counter(), 0.0
                if place == "child":
                    figures = service.submit(make_spec(raw), SHAPE, 10, setting)()
                elif place == "eval":
                    # A fresh cache file each time: the same student is measured again in every round.
                    cache = LatencyCache(scratch / f"{len(rows)}.json", service, after=True)
                    pending = cache.request(make_spec(raw), SHAPE, 10, setting)
                    with pending.meanwhile():
                        predict(build(make_spec(raw), SHAPE, 10), images)
                    evaluating = time.perf_counter() - start
                    start = time.perf_counter()
                    figures = pending()
                else:
                    figures = measure_latency(build(make_spec(raw), SHAPE, 10), SHAPE, setting).to_dict()
                rows.append({"student": i, "place": place, "cap": cap, "min": least, "ms": figures["latency_ms"],
                             "stable": figures["latency_stable"], "seconds": time.perf_counter() - start,
                             "evaluating": evaluating})
                print(f"  round {r + 1} student {i} {place} cap {cap:g}s min {least:g}s: "
                      f"{figures['latency_ms']:.3f} ms, "
                      f"{'confirmed' if figures['latency_stable'] else 'not confirmed'}, waited "
                      f"{rows[-1]['seconds']:.2f}s" + (f" after evaluating for {evaluating:.2f}s" if evaluating else ""),
                      flush=True)
    if service is not None:
        service.close()
    shutil.rmtree(scratch, ignore_errors=True)
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
    for place, cap, least in pairs:
        mine = [x for x in rows if (x["place"], x["cap"], x["min"]) == (place, cap, least)]
        errors = sorted(abs(x["ms"] / reference[x["student"]] - 1) for x in mine)
        p90 = errors[max(0, round(0.9 * len(errors)) - 1)]
        waited = statistics.mean(x["seconds"] for x in mine)
        evaluating = statistics.mean(x["evaluating"] for x in mine)
        window = statistics.median(x["evaluating"] + x["seconds"] for x in mine)
        print(f"{place:>5} max_seconds {cap:g} min_seconds {least:g}: waited {waited:.2f}s per measurement"
              + (f" (after {evaluating:.2f}s of evaluation; window median {window:.2f}s)" if evaluating else "") + ", "
              f"{sum(x['stable'] for x in mine)}/{len(mine)} confirmed; |error| against the reference: median "
              f"{statistics.median(errors):.1%}, 90th percentile {p90:.1%}, largest {errors[-1]:.1%}; "
              f"within 5 %: {sum(e <= 0.05 for e in errors)}/{len(errors)}, "
              f"within 10 %: {sum(e <= 0.10 for e in errors)}/{len(errors)}")


if __name__ == "__main__":
    main()
