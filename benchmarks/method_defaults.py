"""Default distillation weights against the reference code's, side by side, in brief digits runs.

Why some defaults differ from RepDistiller's (kdnas/distill/_feature.py): its weights were tuned for
240-epoch CIFAR-100 runs on 32x32 inputs. This trains each method with both weights, plus labels only, on
the quickstart's teacher (ResNet-20) and prints validation accuracy per student, averaged over seeds.

    PYTHONPATH=. python benchmarks/method_defaults.py [--epochs 5] [--seeds 1 2]

Takes about 10 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kdnas.core import TrialFailure
from kdnas.data import DataConfig, load_split
from kdnas.distill import METHODS, make_loss
from kdnas.models import build, make_spec
from kdnas.train import TrainRecipe, accuracy, fit

# (method, RepDistiller's weights) for the methods whose default kdnas weight differs from them.
REFERENCE = [("fitnet", {"beta": 100.0}), ("at", {"beta": 1000.0}), ("sp", {"beta": 3000.0})]
STUDENTS = [{"family": "resnet_cifar", "depth": 8, "width": 0.5}, {"family": "mobilenetv2", "width": 0.25}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = load_split(DataConfig("digits", val_fraction=0.2, test_fraction=0.2, seed=0))
    torch.manual_seed(0)
    teacher = build(make_spec({"family": "resnet_cifar", "depth": 20, "width": 1.0}), d.input_shape, 10)
    fit(teacher, d.train, TrainRecipe(epochs=15, lr=0.1), lambda o, b: F.cross_entropy(o, b.y), 0)
    print(f"teacher ResNet-20: val {accuracy(teacher.eval(), d.val):.1%}")
    runs = [("none", {})] + [r for name, ref in REFERENCE for r in ((name, {}), (name, ref))]
    for arch in STUDENTS:
        print(f"\nstudent {arch}, {args.epochs} epochs, lr 0.1, mean over seeds {args.seeds}")
        print(f"{'method':8} {'weights':28} {'val acc':>8}  per seed")
        for name, hp in runs:
            shown = hp or {k: h.default for k, h in METHODS.get(name).hyperparameters.items() if k == "beta"}
            accs, t0 = [], time.perf_counter()
            for seed in args.seeds:
                torch.manual_seed(seed)
                student = build(make_spec(arch), d.input_shape, 10)
                try:
                    with make_loss((name, hp), student, teacher, d.train) as (loss_fn, adapters):
                        fit(student, d.train, TrainRecipe(epochs=args.epochs, lr=0.1), loss_fn, seed,
                            extra=adapters)
                    accs.append(accuracy(student, d.val))
                except TrialFailure:
                    accs.append(float("nan"))
            label = ("reference " if hp else "default ") + str(shown)
            print(f"{name:8} {label:28} {statistics.mean(accs):8.1%}  "
                  f"{' '.join(f'{a:.1%}' for a in accs)}  ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
