"""Channels-last against the default layout on CPU: one training step and one inference pass, per family.

``fit`` and ``predict`` run models channels-last on CPU (``kdnas.train._fit.fast_layout``); this is the
measurement behind that choice. The two layouts alternate, and each figure is the fastest of ``--rounds``,
in CPU seconds of this process: with one thread that is the work done, which other processes on a shared
machine barely disturb.

    PYTHONPATH=. python benchmarks/channels_last.py [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kdnas.models import build, make_spec

CASES = [  # (spec, input shape): the shipped families at the input sizes of the embedded and CIFAR-like sets
    ({"family": "resnet_cifar", "depth": 8, "width": 0.5}, (1, 8, 8)),
    ({"family": "resnet_cifar", "depth": 8, "width": 1.0}, (1, 28, 28)),
    ({"family": "resnet_cifar", "depth": 20, "width": 1.0}, (3, 32, 32)),
    ({"family": "plain_cnn"}, (1, 8, 8)),
    ({"family": "plain_cnn"}, (1, 28, 28)),
    ({"family": "mobilenetv2", "width": 0.5}, (1, 28, 28)),
]


def step_fn(spec: dict, shape: tuple, layout: torch.memory_format, train: bool):
    torch.manual_seed(0)
    model = build(make_spec(spec), shape, 10).to(memory_format=layout)
    x = torch.randn(64 if train else 512, *shape).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (len(x),))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if not train:
        model.eval()

    def step():
        if train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode():
                model(x)

    step()  # warm-up: oneDNN picks and caches its kernels on the first call
    return step


def timed(step, seconds: float = 1.0) -> float:
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        step()
        n += 1
    return (time.process_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; CPU ms per training step (batch 64) / inference pass (batch 512)")
    print(f"{'model':42s} {'input':>11s} {'train NCHW':>11s} {'NHWC':>8s} {'ratio':>6s} {'infer NCHW':>11s} {'NHWC':>8s} {'ratio':>6s}")
    for spec, shape in CASES:
        cells = []
        for train in (True, False):
            a = step_fn(spec, shape, torch.contiguous_format, train)
            b = step_fn(spec, shape, torch.channels_last, train)
            ta, tb = [], []
            for _ in range(args.rounds):
                ta.append(timed(a))
                tb.append(timed(b))
            cells += [f"{1000 * min(ta):11.1f}", f"{1000 * min(tb):8.1f}", f"{min(ta) / min(tb):5.2f}x"]
        label = ",".join(f"{k}={v}" for k, v in spec.items())
        print(f"{label:42s} {'x'.join(map(str, shape)):>11s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
