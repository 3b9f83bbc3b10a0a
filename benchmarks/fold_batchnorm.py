"""BatchNorm folded for inference: kdnas's ``predict`` against the same passes on the network as it is.

Every completed trial evaluates its student on val and test, early stopping evaluates it at checkpoints, and
the teacher's and assistants' logit tables are inference passes too. ``predict`` runs them on a copy of the
network with each BatchNorm folded into the convolution before it (``kdnas.train._fit.inference_model``). This
times, side by side and alternating, on MNIST-5k's validation part (1,000 real images), one thread, batches of
32 (kdnas's CPU inference batch), best of ``--repeats``:

- reference: the passes on the network itself (eval mode, channels-last, ``inference_mode``: ``predict``
  before the fold);
- kdnas: ``predict``, its copy made anew in every call (the fold's cost included, as for a student, whose
  weights change between evaluations; a frozen teacher is folded once).

Each network's BatchNorm statistics come from 8 training-mode passes over real images (not the initial
zeros and ones, which fold trivially); the script prints how far the two sides' logits are apart and
whether they predict the same classes.

    PYTHONPATH=. python benchmarks/fold_batchnorm.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

import kdnas.train._fit as train  # noqa: E402
from kdnas.data import DataConfig, load_split  # noqa: E402
from kdnas.models import build, make_spec  # noqa: E402

NETWORKS = _studies.LATENCY_STUDENTS + [{"family": "resnet_cifar", "depth": 20, "width": 1.0}]  # + the mnist5k teacher


def reference(model, data, batch_size: int) -> torch.Tensor:
    """The passes on the network itself, as ``predict`` ran them before the fold."""
    model.eval()
    with train.fast_layout(model, data.device) as layout, torch.inference_mode():
        out = torch.cat([model(x.contiguous(memory_format=layout)) for x, _ in data.batches(batch_size)])
    return out.clone()


def ours(model, data) -> torch.Tensor:
    train._FOLDED.clear()  # a copy made in this call, as for a student between two evaluations
    return train.predict(model, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = load_split(DataConfig("mnist5k", val_fraction=0.2, test_fraction=0.2)).val
    batch = train.inference_batch_size(val.device)
    print(f"predict on {len(val)} MNIST-5k val images, batch {batch}, {args.threads} thread(s), best of "
          f"{args.repeats}; reference: the network as it is; kdnas: BatchNorm folded (copy made in each call); "
          f"{_studies.machine()}")
    ratios = []
    for raw in NETWORKS:
        torch.manual_seed(0)
        model = build(make_spec(raw), val.x.shape[1:], 10)
        model.train()
        with torch.no_grad():
            for x, _ in list(val.batches(125))[:8]:
                model(x)  # BatchNorm statistics of real images
        ref, got = reference(model, val, batch), ours(model, val)
        diff = float((ref - got).abs().max())
        same = torch.equal(ref.argmax(1), got.argmax(1))
        t_ref, t_ours = _studies.best_of_alternating(lambda: reference(model, val, batch), lambda: ours(model, val),
                                                     args.repeats)
        ratios.append(t_ref / t_ours)
        print(f"  {make_spec(raw).label()[:64]:64s} reference {t_ref:6.3f}s  kdnas {t_ours:6.3f}s  "
              f"{t_ref / t_ours:4.2f}x  largest logit difference {diff:.1e}"
              f"{'' if same else '  PREDICTIONS DIFFER'}")
    print(f"speed-up of the folded passes: {min(ratios):.2f}x to {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
