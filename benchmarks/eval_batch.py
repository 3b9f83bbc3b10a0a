"""Inference batch size on CPU: kdnas's evaluation batch (``inference_batch_size``) against 512, its former one.

Every completed trial evaluates its student on val and test, and early stopping evaluates it at checkpoints;
the teacher's and assistants' logit tables are inference passes too. This times ``kdnas.train._fit.predict`` on
MNIST-5k's validation part (1,000 real images) for students of ``search_spaces/mixed_families.yaml`` and the
mnist5k teacher, at both batch sizes, alternating, best of ``--repeats``, one thread, and checks that both
give the same predictions.

    PYTHONPATH=. python benchmarks/eval_batch.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

from kdnas.data import DataConfig, load_split  # noqa: E402
from kdnas.models import build, make_spec  # noqa: E402
from kdnas.train import inference_batch_size, predict  # noqa: E402

NETWORKS = _studies.MNIST5K_STUDENTS + [{"family": "resnet_cifar", "depth": 20, "width": 1.0}]  # + the mnist5k teacher
REFERENCE = 512


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = load_split(DataConfig("mnist5k", val_fraction=0.2, test_fraction=0.2)).val
    ours = inference_batch_size(val.device)
    print(f"predict on {len(val)} MNIST-5k val images, {args.threads} thread(s): batch {ours} (kdnas) vs {REFERENCE}; "
          f"best of {args.repeats}; {_studies.machine()}")
    ratios = []
    for raw in NETWORKS:
        torch.manual_seed(0)
        model = build(make_spec(raw), val.x.shape[1:], 10)
        same = torch.equal(predict(model, val, ours).argmax(1), predict(model, val, REFERENCE).argmax(1))
        t_ref, t_ours = _studies.best_of_alternating(lambda: predict(model, val, REFERENCE),
                                                     lambda: predict(model, val, ours), args.repeats)
        ratios.append(t_ref / t_ours)
        label = make_spec(raw).label()
        print(f"  {label[:70]:70s} {REFERENCE}: {t_ref:6.3f}s  {ours}: {t_ours:6.3f}s  {t_ref / t_ours:4.1f}x"
              f"{'' if same else '  PREDICTIONS DIFFER'}")
    print(f"speed-up of batch {ours} over {REFERENCE}: {min(ratios):.1f}x to {max(ratios):.1f}x")


if __name__ == "__main__":
    main()
