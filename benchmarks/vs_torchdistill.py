"""Peer benchmark: one brief KD training through kdnas's engine and through torchdistill, side by side.

torchdistill (yoshitomo-matsubara/torchdistill, ``pip install torchdistill``; kdnas's ``peer`` extra) is the
maintained knowledge-distillation framework. Both sides train the same student (CIFAR ResNet-8 at width 0.5)
from the same initial weights, taught by the same teacher (ResNet-20, trained briefly here first and shared),
on the same data (MNIST-5k as kdnas splits it), with the same epochs, batch size, seed, loss, optimiser,
schedule and torch threads; the student's accuracy is measured by the same code afterwards.

The torchdistill side is driven as its own example script (``examples/torchvision/image_classification.py``)
drives it, from a config dict instead of a YAML file: ``get_distillation_box`` with a ``WeightedSumLoss`` of
its registered ``KDLoss``, its data loader (a ``RandomSampler`` over the training tensors, batches of
``(x, y, supp_dict)``), then per epoch ``pre_epoch_process``, ``forward_process`` + ``post_forward_process``
per batch, ``post_epoch_process``; finally ``clean_modules``. Matching kdnas's recipe:

- loss: kdnas's ``(1 - alpha) CE + alpha T^2 KL`` is KDLoss's ``alpha' CE + (1 - alpha') T^2 KL`` with
  ``alpha' = 1 - alpha`` (torchdistill's alpha weighs the labels); the script checks that both give the same
  value on one batch;
- optimiser: SGD with Nesterov momentum, weight decay on weights but not on BatchNorm and biases, which
  torchdistill's config cannot say per parameter; it takes a registered optimiser function
  (``register_optimizer``, its documented extension point) that makes the same two groups;
- schedule: cosine to zero, stepped after every batch: ``CosineAnnealingLR(T_max = total steps)`` with
  ``scheduling_step: 1``, the same factor kdnas sets before each step;
- shuffling: its ``RandomSampler`` draws ``randperm(n)`` from a generator seeded like kdnas's, so both sides
  see the same batches in the first epoch (it draws one permutation more per epoch than it uses, so later
  epochs see other, equally random, batches);
- teacher: frozen (``requires_grad: False``, so it runs under ``no_grad``) and in eval mode. The example script
  leaves a loaded teacher in train mode (BatchNorm on batch statistics); here both sides distill from the
  teacher's eval-mode outputs, so that they learn from the same targets.

Remaining differences are the engines themselves: torchdistill runs the teacher on every batch and builds
batches sample by sample through a DataLoader (``num_workers: 0``, on the one core the run gets); kdnas reads
the teacher's logits from its per-study table (computed once; its cost is printed separately) and slices
batches from the in-memory split, in channels-last layout on CPU. That layout rounds differently, and SGD at
lr 0.1 amplifies the difference within a few dozen steps, so single runs of the two sides end at different
accuracies: compare means over repeats. With flat layers only, where the layouts agree, one epoch of each
side ends at the same weights (tests/test_peer.py).

Runs alternate between the sides so that load from other processes hits both alike. Each run is timed in
wall-clock seconds and in CPU seconds of this process; with one torch thread the CPU time is the work done,
which other processes on a shared machine barely disturb, so the headline ratio uses the median CPU times.

    PYTHONPATH=. python benchmarks/vs_torchdistill.py [--epochs 4] [--repeats 3] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdnas.core import ArtifactStore
from kdnas.data import DataConfig, DataSplit, TensorSource, load_split
from kdnas.distill import make_loss, teacher_logits
from kdnas.models import build, make_spec
from kdnas.train import Batch, TrainRecipe, accuracy, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, also when imported by a test
# The same clock, and kdnas's side trained exactly as that benchmark trains it (T, ALPHA included).
from engine_vs_reference import ALPHA, Clock, T  # noqa: E402
from engine_vs_reference import engine_kd as kdnas_kd  # noqa: E402

try:
    import torchdistill
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.losses.registry import get_mid_level_loss
    from torchdistill.optim.registry import register_optimizer
except ImportError:
    sys.exit("vs_torchdistill.py compares kdnas with torchdistill, which is not installed: "
             "pip install -e '.[peer]' (or '.[dev]')")

STUDENT = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.5})
TEACHER = make_spec({"family": "resnet_cifar", "depth": 20, "width": 1.0})
KDNAS, PEER = "kdnas engine", "torchdistill"
SMOKE_IMAGES = 320


@register_optimizer(key="SGDNoDecayOnNormAndBias")
def sgd_no_decay_on_norm_and_bias(params, weight_decay: float, **kwargs) -> torch.optim.SGD:
    """kdnas's optimiser (``kdnas.train.make_optimizer``) as a torchdistill optimiser: the box hands over the
    student's trainable parameters; weights decay, BatchNorm parameters and biases (1-d) do not."""
    params = list(params)
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.SGD(groups, **kwargs)


def kd_loss_config() -> dict:
    """torchdistill's registered KDLoss with kdnas's hinton weighting (its alpha weighs the labels)."""
    return {"key": "KDLoss", "kwargs": {"student_module_path": ".", "student_module_io": "output",
                                        "teacher_module_path": ".", "teacher_module_io": "output",
                                        "temperature": T, "alpha": 1 - ALPHA, "reduction": "batchmean"}}


def train_config(recipe: TrainRecipe, n: int, seed: int) -> dict:
    """The ``train`` section of a torchdistill config, as a dict, for kdnas's ``recipe`` on ``n`` samples."""
    steps = recipe.epochs * math.ceil(n / recipe.batch_size)
    return {
        "num_epochs": recipe.epochs,
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {"class_or_func": torch.utils.data.RandomSampler,
                        "kwargs": {"generator": torch.Generator().manual_seed(seed)}},
            "kwargs": {"batch_size": recipe.batch_size, "num_workers": 0, "drop_last": False},
        },
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False, "frozen_modules": []},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": True, "frozen_modules": []},
        "optimizer": {"key": "SGDNoDecayOnNormAndBias",
                      "kwargs": {"lr": recipe.lr, "momentum": recipe.momentum, "nesterov": True,
                                 "weight_decay": recipe.weight_decay}},
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": steps}, "scheduling_step": 1},
        "criterion": {"key": "WeightedSumLoss",
                      "kwargs": {"sub_terms": {"kd": {"criterion": kd_loss_config(), "weight": 1.0}}}},
    }


def torchdistill_kd(student, teacher, train: TensorSource, recipe: TrainRecipe, seed: int) -> tuple[float, float]:
    """One distillation through torchdistill's DistillationBox; returns (wall, cpu) seconds."""
    teacher = copy.deepcopy(teacher).eval()  # clean_modules() makes the teacher it was given trainable again
    datasets = {"train": torch.utils.data.TensorDataset(train.x, train.y)}
    clock = Clock()
    box = get_distillation_box(teacher, student, datasets, train_config(recipe, len(train), seed),
                               torch.device("cpu"), None, False, 1)
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        for x, y, supp in box.train_data_loader:
            loss = box.forward_process(x, y, supp)
            box.post_forward_process(loss=loss)
        box.post_epoch_process()
    box.clean_modules()
    return clock.read()


def same_loss(student, teacher, split: DataSplit) -> float:
    """|kdnas loss - torchdistill loss| on one batch: the two configurations describe the same objective."""
    x, y = split.train.x[:64], split.train.y[:64]
    with torch.no_grad():
        s, t = student.eval()(x), teacher(x)
        with make_loss(("hinton", {"temperature": T, "alpha": ALPHA}), student, teacher, split.train,
                       teacher_logits=lambda b: t) as (loss_fn, _):
            ours = loss_fn(s, Batch(x, y, torch.arange(64), 0.0))
        theirs = get_mid_level_loss(kd_loss_config())({".": {"output": s}}, {".": {"output": t}}, y)
    return float((ours - theirs).abs())


def smoke_split(split: DataSplit) -> DataSplit:
    """The first few hundred training and validation images: a run of seconds that still covers every step."""
    n = SMOKE_IMAGES
    return dataclasses.replace(split, train=TensorSource(split.train.x[:n], split.train.y[:n]),
                               val=TensorSource(split.val.x[:n], split.val.y[:n]),
                               fingerprint=f"{split.fingerprint}-first{n}")


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="student epochs (a brief trial)")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 = one trial per core, how kdnas runs these tiny networks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help=f"a check that both sides run: {SMOKE_IMAGES} images, 1 epoch, 1 repeat, seconds")
    args = ap.parse_args()
    if args.smoke:
        args.epochs, args.teacher_epochs, args.repeats = 1, 1, 1
    torch.set_num_threads(args.threads)

    split = load_split(DataConfig("mnist5k"))
    if args.smoke:
        split = smoke_split(split)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=64, lr=0.1)
    print(f"MNIST-5k{' (smoke)' if args.smoke else ''}: {split.sizes()}; student {STUDENT.label()}, teacher "
          f"{TEACHER.label()}; {args.epochs} epochs, batch {recipe.batch_size}, SGD lr {recipe.lr} Nesterov "
          f"momentum {recipe.momentum}, weight decay {recipe.weight_decay} (not on BatchNorm/biases), cosine per "
          f"step; hinton T={T} alpha={ALPHA}; torch threads {torch.get_num_threads()}; torch {torch.__version__}, "
          f"torchdistill {torchdistill.__version__}")

    torch.manual_seed(0)
    teacher = build(TEACHER, split.input_shape, split.num_classes)
    t0 = time.perf_counter()
    fit(teacher, split.train, TrainRecipe(epochs=args.teacher_epochs, lr=0.1), lambda o, b: F.cross_entropy(o, b.y), 0)
    teacher.eval().requires_grad_(False)
    print(f"teacher trained in {time.perf_counter() - t0:.1f}s, val acc {accuracy(teacher, split.val):.2%}")

    def fresh_student():
        torch.manual_seed(args.seed)  # the same initial weights on both sides
        return build(STUDENT, split.input_shape, split.num_classes)

    print(f"loss check: |kdnas - torchdistill KDLoss| on one batch = {same_loss(fresh_student(), teacher, split):.1e}")
    with tempfile.TemporaryDirectory() as tmp:  # kdnas's logit table lives in a study's store: a throwaway one
        clock = Clock()
        table = teacher_logits(teacher, "bench", split, ArtifactStore(Path(tmp)), random_augment=False)
        table_wall, table_cpu = clock.read()

    sides = {KDNAS: lambda s, seed: kdnas_kd(s, teacher, table, split.train, recipe, seed),
             PEER: lambda s, seed: torchdistill_kd(s, teacher, split.train, recipe, seed)}
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    accs: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))  # neither side always goes first
        for name in order:
            s = fresh_student()
            w, c = sides[name](s, args.seed + r)
            wall[name].append(w)
            cpu[name].append(c)
            accs[name].append(accuracy(s, split.val))
            print(f"  run {r + 1}: {name:13s} {w:6.1f}s wall {c:6.1f}s cpu  val {accs[name][-1]:.2%}", flush=True)

    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    print(f"\n{'':13s} {'cpu s (median)':>15s} {'wall s (median)':>16s} {'val acc (mean ± sd, ' + str(args.repeats) + ' runs)':>30s}")
    for name in sides:
        print(f"{name:13s} {med_cpu[name]:15.1f} {med_wall[name]:16.1f} {spread(accs[name]):>30s}")
    print(f"kdnas's teacher logit table, once per study (every later trial reads it back): {table_cpu:.1f}s cpu, "
          f"{table_wall:.1f}s wall")
    print(f"speed ratio torchdistill / kdnas: {med_cpu[PEER] / med_cpu[KDNAS]:.1f}x cpu, "
          f"{med_wall[PEER] / med_wall[KDNAS]:.1f}x wall per trial; "
          f"{med_cpu[PEER] / (med_cpu[KDNAS] + table_cpu):.1f}x cpu with the table computed in the same run; "
          f"accuracy difference kdnas - torchdistill "
          f"{100 * (statistics.mean(accs[KDNAS]) - statistics.mean(accs[PEER])):+.2f} points")


if __name__ == "__main__":
    main()
