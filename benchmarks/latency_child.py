"""What a study waits for around its latency child: the child's start (until its first answer can come) and its
end (from the closed stdin to the exit), kdnas's child against the way it was before, side by side in one run.

Every `kdnas search` that measures a CPU latency in a child (``costs.latency.background``, kdnas/costs/_background.py)
starts one such process per study process and closes it at the end; a brief study's first trial waits for the
child's start, and the command waits for its end. Two changes are measured against their reference:

- **start**: the child imports ``kdnas.costs._child``; ``import kdnas`` used to import the whole notebook API
  (bundle, results, study: pandas, Optuna, the report code) on the way. Reference: the same child command after
  importing those packages, as the eager ``kdnas/__init__.py`` did. Timed from ``Popen`` to the child's answer
  to a first request (a tiny network, ``min_seconds`` 0.05).
- **end**: ``kdnas.costs._child.main`` ends with ``os._exit`` once its stdin closes; the reference returns from
  ``serve()`` into the interpreter's teardown (torch loaded). Timed from closing stdin to the exit.

Medians of ``--runs`` alternating pairs (the order flips each run), ratio reference / kdnas as ``N.Nx``.

    PYTHONPATH=. python benchmarks/latency_child.py [--runs 5]
    PYTHONPATH=. python benchmarks/latency_child.py --smoke     # one pair; figures mean nothing
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
KDNAS = "from kdnas.costs._child import main; main()"
# The child as it was: the eager package import first, then serve() returning into the interpreter's teardown.
REFERENCE = "import kdnas.bundle, kdnas.results, kdnas.study; from kdnas.costs._child import serve; serve()"
REQUEST = {"request": 0, "spec": {"family": "plain_cnn", "channels": [4, 8], "pool_every": 1, "kernel_size": 3},
           "input_shape": [1, 8, 8], "num_classes": 10,
           "setting": {"min_seconds": 0.05, "max_seconds": 0.2}, "hold": False}


def one(code: str) -> tuple[float, float]:
    """Seconds from the start to the first answer, and from the closed stdin to the exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            bufsize=1, env=_studies.child_env())
    proc.stdin.write(json.dumps(REQUEST) + "\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    started = time.perf_counter() - t0
    if "latency" not in answer:
        raise SystemExit(f"the child answered {answer}")
    t1 = time.perf_counter()
    proc.stdin.close()
    proc.wait(timeout=30)
    ended = time.perf_counter() - t1
    proc.stdout.close()
    return started, ended


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="alternating pairs (kdnas, reference)")
    ap.add_argument("--smoke", action="store_true", help="one pair, in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    runs = 1 if args.smoke else args.runs
    times: dict[str, list[tuple[float, float]]] = {"kdnas": [], "reference": []}
    for i in range(runs):
        order = [("kdnas", KDNAS), ("reference", REFERENCE)]
        for name, code in order if i % 2 == 0 else order[::-1]:
            times[name].append(one(code))
    med = {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)) for name, ts in times.items()}
    for part, k in (("start (Popen to the first answer)", 0), ("end (closed stdin to exit)", 1)):
        ours, ref = med["kdnas"][k], med["reference"][k]
        print(f"{part:36s} kdnas {ours:.3f}s, reference {ref:.3f}s: {ref / ours:.1f}x  (median of {runs})")
    saved = sum(med["reference"]) - sum(med["kdnas"])
    print(f"a study process waits up to {saved:.2f}s less per child (both together)")


if __name__ == "__main__":
    main()
