"""Counting parameters and MACs: on the meta device against real, uninitialised CPU tensors, side by side.

A study counts every candidate it samples (kdnas/costs/_counts.py ``count``), before screening it against
the limits and again for the trial's attributes (cached per process). On the meta device no memory is
allocated and no arithmetic is done, so any size costs the same; but each op goes through Python-level meta
kernels. For small networks on small inputs a real pass on uninitialised CPU tensors is cheaper, so
``count`` now picks the CPU for up to 5 M parameters on inputs of up to 3x64x64 elements, and meta
otherwise. This script times both devices on the same architectures (the mnist5k students at 1x28x28,
CIFAR ResNets and MobileNetV2s at 3x32x32 and 3x64x64, and the same at 3x128x128, which stays on meta), in
alternating order, checks that the figures agree, and prints the median milliseconds per count and the ratio.

    PYTHONPATH=. python benchmarks/counting.py [--repeats 5] [--counter flop_counter]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

CIFAR = [
    {"family": "resnet_cifar", "depth": 20, "width": 1.0},
    {"family": "resnet_cifar", "depth": 56, "width": 0.5},
    {"family": "mobilenetv2", "blocks": [1, 2, 2, 2], "expansion": 6, "kernel_size": 3, "width": 1.0},
]
CASES = ([(s, _studies.MNIST_SHAPE) for s in _studies.MNIST5K_STUDENTS] + [(s, (3, 32, 32)) for s in CIFAR]
         + [(s, (3, 64, 64)) for s in CIFAR] + [(s, (3, 128, 128)) for s in CIFAR])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--counter", default="flop_counter", choices=["flop_counter", "thop"])
    args = ap.parse_args()

    import torch

    from kdnas.costs import count
    from kdnas.costs._counts import _REAL_MAX_INPUT, _REAL_MAX_PARAMS
    from kdnas.models import make_spec

    torch.set_num_threads(1)  # as a study's process would have at most; counting is one pass at batch 1
    print(f"{args.counter}, median of {args.repeats} counts each; {_studies.machine()}")
    for raw, shape in CASES:
        spec = make_spec(raw)
        count(spec, shape, 10, args.counter, device="meta")  # first use: imports, kernel registration
        times: dict[str, list[float]] = {"meta": [], "cpu": []}
        figures = {}
        for r in range(args.repeats):
            for device in (("meta", "cpu") if r % 2 == 0 else ("cpu", "meta")):
                start = time.perf_counter()
                figures[device] = count(spec, shape, 10, args.counter, device=device)
                times[device].append(time.perf_counter() - start)
        if figures["meta"] != figures["cpu"]:
            sys.exit(f"{spec.label()} at {shape}: meta counted {figures['meta']}, cpu {figures['cpu']}")
        meta, cpu = (1e3 * statistics.median(times[d]) for d in ("meta", "cpu"))
        picked = ("cpu" if figures["cpu"].params <= _REAL_MAX_PARAMS and shape[0] * shape[1] * shape[2]
                  <= _REAL_MAX_INPUT else "meta")
        print(f"{'x'.join(map(str, shape)):>8} {spec.label()[:62]:62s} {figures['cpu'].params:>10,} params "
              f"{figures['cpu'].macs:>13,} MACs: meta {meta:7.1f} ms, cpu {cpu:7.1f} ms, meta/cpu {meta / cpu:4.1f}x; "
              f"count() picks {picked}")


if __name__ == "__main__":
    main()
