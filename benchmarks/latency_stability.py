"""Does one architecture's latency agree between separate processes? Runs `kdnas profile` N times.

Each run is a fresh process (`python -m kdnas.cli profile ... --json`), one after the other. Printed side by
side: the floor estimate kdnas reports (``latency_ms``, the 5th-fastest call) and the plain median of the same
samples (``latency_median_ms``), which is what a median-of-blocks measurement reports; for each, the max
relative deviation between runs (max / min - 1) and how many pairs of runs agree within 5 %. ``--load K`` keeps K extra processes busy training a small
CNN (one thread each) for the whole benchmark, on top of whatever else the machine is doing.

    PYTHONPATH=. python benchmarks/latency_stability.py --runs 8
    PYTHONPATH=. python benchmarks/latency_stability.py --runs 8 --load 1
    PYTHONPATH=. python benchmarks/latency_stability.py --runs 6 --arch '{family: mobilenetv2, width: 0.5}'
    PYTHONPATH=. python benchmarks/latency_stability.py --smoke   # 2 brief runs: a check in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load(seconds: float) -> None:
    """A neighbour: train a small CNN on random data with one thread until ``seconds`` have passed."""
    import torch

    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    end = time.time() + seconds
    while time.time() < end:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--arch", default="{family: resnet_cifar, depth: 8, width: 0.25}", help="architecture, as YAML")
    ap.add_argument("--input", default="1,8,8")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--load", type=int, default=0, help="extra busy processes during the benchmark")
    ap.add_argument("--profile-args", default="", help="more `kdnas profile` flags, e.g. '--batch-size 8'")
    ap.add_argument("--smoke", action="store_true", help="a check in seconds (tests/test_benchmarks.py runs it): "
                    "2 runs of 0.05-0.3 s; figures mean nothing")
    ap.add_argument("--_load", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._load:
        return load(args._load)
    if args.smoke:
        args.runs = 2
        args.profile_args = f"{args.profile_args} --min-seconds 0.05 --max-seconds 0.3"

    tmp = tempfile.TemporaryDirectory(prefix="kdnas-latency-stability-")
    arch = Path(tmp.name) / "arch.yaml"
    arch.write_text(args.arch + "\n")
    # Bounded, so that neighbours never outlive a killed benchmark by long: runs take at most ~max_seconds.
    budget = str(args.runs * 15 + 30)
    neighbours = [subprocess.Popen([sys.executable, __file__, "--_load", budget]) for _ in range(args.load)]
    rows = []
    try:
        time.sleep(1.0 if neighbours else 0)  # let the neighbours get going
        for i in range(args.runs):
            cmd = [sys.executable, "-m", "kdnas.cli", "profile", str(arch), "--input", args.input,
                   "--classes", str(args.classes), "--json", *args.profile_args.split()]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                sys.exit(f"run {i} failed:\n{out.stderr}")
            r = json.loads(out.stdout)
            rows.append(r)
            print(f"run {i}: latency_ms {r['latency_ms']:.4f}  raw_ms {r['latency_raw_ms']:.4f}  "
                  f"median_ms {r['latency_median_ms']:.4f}  "
                  f"probe {r['latency_probe_ms'] or 0:.4f}  calls {r['latency_calls']:>6}  {r['latency_seconds']:.1f} s  "
                  f"{'confirmed' if r['latency_stable'] else 'NOT confirmed'}", flush=True)
    finally:
        for p in neighbours:
            p.terminate()
            p.wait()
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[0]
    print(f"\n{rows[0]['label']} on {args.input}, {args.runs} processes, {args.load} extra busy processes, "
          f"load average {loadavg}")
    for key, what in (("latency_ms", "floor estimate (kdnas latency_ms)"), ("latency_median_ms", "median of the same calls")):
        v = [r[key] for r in rows]
        pairs = [(a, b) for i, a in enumerate(v) for b in v[i + 1:]]
        close = sum(max(a, b) / min(a, b) - 1 < 0.05 for a, b in pairs)
        print(f"  {what:36s} max relative deviation {max(v) / min(v) - 1:6.1%}   (min {min(v):.4f}, max {max(v):.4f} ms); "
              f"pairs of runs within 5 %: {close} of {len(pairs)}")


if __name__ == "__main__":
    main()
