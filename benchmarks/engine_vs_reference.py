"""Benchmark (a): one brief KD training through kdnas's engine and through a plain reference loop.

The same student (CIFAR ResNet-8), teacher (ResNet-20, trained briefly first and shared), data (MNIST-5k
split by kdnas), epochs, seed, initial weights, optimiser and schedule on every side.

The reference trains a student the way the published TAKD code does (Mirzadeh et al. 2020,
``TrainManager.calculate_loss``): a torch DataLoader over the training tensors, the teacher in eval mode run
on every step, the standard KD loss. That code calls the teacher outside ``no_grad`` and never freezes
its parameters, so every ``loss.backward()`` also back-propagates through the teacher. The script times
that loop as published, and a second, charitable variant with the teacher under ``no_grad``. Neither
times TAKD's per-epoch evaluation. kdnas trains as a trial of a study does: batches from the in-memory
BatchSource, teacher logits from the per-study table.

Runs alternate between the sides so that load from other processes hits all of them alike; each side's
figure is its fastest run, its accuracy the mean over runs. Prints accuracies and speed ratios as N.Nx.

    PYTHONPATH=. python benchmarks/engine_vs_reference.py [--epochs 4] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdnas.artifacts import ArtifactStore
from kdnas.data import DataConfig, load_split
from kdnas.distill import METHODS
from kdnas.models import build, make_spec
from kdnas.teacher_logits import teacher_logits
from kdnas.train import TrainRecipe, accuracy, fit

STUDENT = make_spec({"family": "resnet_cifar", "depth": 8, "width": 1.0})
TEACHER = make_spec({"family": "resnet_cifar", "depth": 20, "width": 1.0})
T, ALPHA = 4.0, 0.9  # a usual Hinton setting (TAKD's CIFAR runs use T=5, lambda in 0.05..0.95)


def reference_kd(student, teacher, train_x, train_y, recipe: TrainRecipe, seed: int, as_published: bool) -> float:
    """The published-code way: DataLoader, teacher forward every step, KD loss; returns seconds."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y), batch_size=recipe.batch_size,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    # The engine's optimiser: SGD with Nesterov momentum, no weight decay on BatchNorm and biases.
    decay = [p for p in student.parameters() if p.ndim > 1]
    rest = [p for p in student.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                          lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    total = recipe.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    if as_published:  # a loaded teacher's parameters require gradients, and nothing turns that off
        teacher = copy.deepcopy(teacher).requires_grad_(True)
    teacher.eval()
    t0 = time.perf_counter()
    for _ in range(recipe.epochs):
        student.train()
        for x, y in loader:
            if len(y) < 2:  # as the engine does: a batch of one breaks BatchNorm
                continue
            out = student(x)
            with torch.set_grad_enabled(as_published):
                t_out = teacher(x)
            # The standard KD term; TAKD's first release averaged it over classes too (reduction "mean").
            kd = F.kl_div(F.log_softmax(out / T, dim=1), F.softmax(t_out / T, dim=1), reduction="batchmean")
            loss = (1 - ALPHA) * F.cross_entropy(out, y) + ALPHA * T * T * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def engine_kd(student, table, split, recipe: TrainRecipe, seed: int) -> float:
    """kdnas's engine as a trial uses it; returns seconds."""
    loss = METHODS.get("hinton").loss
    t0 = time.perf_counter()
    fit(student, split.train, recipe, lambda out, b: loss(out, table(b), b.y, temperature=T, alpha=ALPHA), seed)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="student epochs (a brief trial)")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating; the fastest counts")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 = one trial per core, how kdnas runs these tiny networks on 2 cores")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    split = load_split(DataConfig("mnist5k"))
    recipe = TrainRecipe(epochs=args.epochs, batch_size=64, lr=0.1)
    print(f"MNIST-5k: {split.sizes()}; student {STUDENT.label()}, teacher {TEACHER.label()}; {args.epochs} epochs, "
          f"batch {recipe.batch_size}; torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    teacher = build(TEACHER, split.input_shape, split.num_classes)
    t0 = time.perf_counter()
    fit(teacher, split.train, TrainRecipe(epochs=args.teacher_epochs, lr=0.1), lambda o, b: F.cross_entropy(o, b.y), 0)
    teacher.eval().requires_grad_(False)
    print(f"teacher trained in {time.perf_counter() - t0:.1f}s, val acc {accuracy(teacher, split.val):.2%}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table = teacher_logits(teacher, "bench", split, ArtifactStore(Path(tmp)), random_augment=False)
        table_s = time.perf_counter() - t0  # once per study; every trial after the first reads it back

    def fresh_student():
        torch.manual_seed(args.seed)  # the same initial weights on both sides
        return build(STUDENT, split.input_shape, split.num_classes)

    sides = {
        "kdnas engine": lambda s, seed: engine_kd(s, table, split, recipe, seed),
        "reference, as published": lambda s, seed: reference_kd(s, teacher, split.train.x, split.train.y, recipe, seed, True),
        "reference, teacher no_grad": lambda s, seed: reference_kd(s, teacher, split.train.x, split.train.y, recipe, seed, False),
    }
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    accs: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.repeats):
        for name, run in sides.items():
            s = fresh_student()
            seconds[name].append(run(s, args.seed + r))
            accs[name].append(accuracy(s, split.val))
            print(f"  run {r + 1}: {name:28s} {seconds[name][-1]:6.1f}s  val {accs[name][-1]:.2%}", flush=True)
    best = {k: min(v) for k, v in seconds.items()}
    acc = {k: sum(v) / len(v) for k, v in accs.items()}
    eng = best["kdnas engine"]
    print(f"\n{'':28s} {'seconds':>8s} {'val acc':>8s}")
    for name in sides:
        print(f"{name:28s} {best[name]:8.1f} {acc[name]:8.2%}")
    print(f"teacher logit table (once per study, read back by every later trial and run): {table_s:.1f}s")
    for ref in ("reference, as published", "reference, teacher no_grad"):
        print(f"vs {ref}: speed ratio {best[ref] / eng:.1f}x per trial ({best[ref] / (eng + table_s):.1f}x with the "
              f"table computed in the same run); accuracy difference {100 * (acc['kdnas engine'] - acc[ref]):+.2f} points")


if __name__ == "__main__":
    main()
