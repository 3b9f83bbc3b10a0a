"""A small-scale reproduction of TAKD (Mirzadeh et al. 2020) and DGKD (Son et al. 2021) on MNIST-5k.

A large teacher/student gap (CIFAR ResNet-56 -> ResNet-8) and one teacher assistant (ResNet-20) between
them. Four ways of training the same student, all through kdnas's own library (``load_split``, ``build``,
``fit``, ``guided_loss``, ``AssistantPool``, ``teacher_logits``):

  none   labels only
  kd     Hinton KD directly from the teacher
  takd   teacher -> assistant -> student (the student learns from the assistant only)
  dgkd   the student learns from the teacher and the assistant; in every batch each of the two is dropped
         with probability --drop-rate (at least one is kept), Son et al.'s stochastic DGKD

One teacher is trained per run. Per seed s, one assistant is distilled from the teacher (seed 100 + s) and
shared by TAKD and DGKD (with a single assistant both train it the same way: from the teacher alone), then
the four students are trained with seed s: the same initial weights and the same batch order in every
condition, so the conditions are compared pair by pair. Every network uses the same recipe (SGD + Nesterov,
cosine schedule, no augmentation, so every guide's logits are one table); teacher epochs aside, assistants
and students train for --epochs. Nothing is selected on the test split: each student is evaluated once,
after its last epoch, on val and on test.

    PYTHONPATH=. python benchmarks/reproduce_chain.py [--seeds 3] [--epochs 25] [--teacher-epochs 30]
        [--out results.json] [--quick] [--smoke]

The full default run takes about an hour on one CPU core (docs/results.md); --quick checks the script in
about a minute (narrow, shallow networks, one epoch each); --smoke in seconds (the same on digits, narrower).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdnas.core import ArtifactStore
from kdnas.costs import count
from kdnas.data import DataConfig, load_split
from kdnas.distill import AssistantPool, Chain, Guide, MethodSpec, guided_loss, teacher_logits
from kdnas.models import build, digest, make_spec
from kdnas.train import TrainRecipe, accuracy, fit

CONDITIONS = ("none", "kd", "takd", "dgkd")
TEACHER_SEED = 0  # one teacher for every seed: the conditions differ in how it is passed on, not in it
ASSISTANT_SEED_OFFSET = 100  # assistant seed = 100 + student seed: a different draw from the student's
# MNIST-5k as the shipped mnist5k study splits it: 3,000 train / 1,000 val / 1,000 test, stratified.
DATA = DataConfig(dataset="mnist5k", val_fraction=0.2, test_fraction=0.2, seed=0)
SMOKE_DATA = DataConfig(dataset="digits", val_fraction=0.2, test_fraction=0.2, seed=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="student seeds 0..N-1 (assistant seeds 100..100+N-1)")
    ap.add_argument("--epochs", type=int, default=25, help="epochs of every assistant and student")
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--teacher-depth", type=int, default=56)
    ap.add_argument("--assistant-depth", type=int, default=20)
    ap.add_argument("--student-depth", type=int, default=8)
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier of all three networks")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    # kdnas's Hinton defaults (docs/methods.md), not tuned per condition; TAKD's code uses T=5 and searches lambda.
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9, help="share of the distillation term in every KD loss")
    ap.add_argument("--drop-rate", type=float, default=0.5, help="DGKD: chance of dropping each guide per batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the work is measurable in CPU time)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file of every per-seed figure (rewritten as it goes)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="artifact folder for the teacher, assistants and logit tables, reused by later runs "
                         "(default: a temporary folder, so a run caches within itself only)")
    ap.add_argument("--quick", action="store_true",
                    help="check the script: 2 seeds, 1 epoch each, teacher/assistant/student ResNet-20/14/8 at width 0.5")
    ap.add_argument("--smoke", action="store_true", help="a check in seconds (tests/test_benchmarks.py runs it): "
                    "--quick on digits at width 0.25; figures mean nothing")
    args = ap.parse_args(argv)
    args.data = SMOKE_DATA if args.smoke else DATA
    if args.smoke:
        args.quick = True
    if args.quick:
        args.seeds, args.epochs, args.teacher_epochs = 2, 1, 1
        args.teacher_depth, args.assistant_depth, args.student_depth = 20, 14, 8
        args.width = 0.25 if args.smoke else 0.5
    if args.seeds < 2:
        ap.error(f"`--seeds >= 2` must hold for a standard deviation, but got seeds={args.seeds}")
    if not args.teacher_depth > args.assistant_depth > args.student_depth:
        ap.error("teacher > assistant > student depth must hold, but got "
                 f"{args.teacher_depth} > {args.assistant_depth} > {args.student_depth}")
    return args


class Clock:
    """Wall-clock and process CPU seconds since creation."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"wall_s": round(time.perf_counter() - self.wall, 1), "cpu_s": round(time.process_time() - self.cpu, 1)}


def train_teacher(spec, recipe: TrainRecipe, split, store: ArtifactStore, say) -> tuple[Guide, dict]:
    """The teacher, trained on labels once (or loaded from ``store``), as a frozen guide with its logit table."""
    key = digest({"script": "reproduce_chain", "format": 1, "spec": spec.to_dict(), "data": split.fingerprint,
                  "recipe": recipe.to_dict(), "seed": TEACHER_SEED})
    clock = Clock()
    torch.manual_seed(TEACHER_SEED)  # before build: the initial weights are part of what the seed fixes
    model = build(spec, split.input_shape, split.num_classes)
    trained = not store.has("teachers", key)
    if trained:
        say(f"training teacher {spec.label()} for {recipe.epochs} epochs ...")
        fit(model, split.train, recipe, lambda logits, batch: F.cross_entropy(logits, batch.y), TEACHER_SEED)
        store.put_state_dict("teachers", key, model.state_dict())
    else:
        model.load_state_dict(store.get_state_dict("teachers", key))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info = {"spec": spec.to_dict(), "params": count(spec, split.input_shape, split.num_classes).params,
            "trained_now": trained, "val_accuracy": accuracy(model, split.val),
            "test_accuracy": accuracy(model, split.test), **clock.read()}
    logits = teacher_logits(model, key, split, store, random_augment=False)
    return Guide("teacher", key, model, logits, info), info


def train_student(spec, method: MethodSpec, guides: list[Guide], recipe: TrainRecipe, split, drop_rate: float,
                  seed: int) -> dict:
    clock = Clock()
    torch.manual_seed(seed)  # same seed, same initial weights in every condition
    model = build(spec, split.input_shape, split.num_classes)
    with guided_loss(method, model, guides, split.train, drop_rate, seed) as (loss_fn, adapters):
        history = fit(model, split.train, recipe, loss_fn, seed, extra=adapters)
    return {"val_accuracy": accuracy(model, split.val), "test_accuracy": accuracy(model, split.test),
            "final_loss": history[-1], **clock.read()}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values)


def summarise(runs: list[dict]) -> dict:
    """Per condition: mean and sample std over seeds of val and test accuracy, and of the paired difference
    to KD (same seed, so the same initial weights and batch order)."""
    by = {c: {r["seed"]: r for r in runs if r["condition"] == c} for c in CONDITIONS}
    out = {}
    for c in CONDITIONS:
        seeds = sorted(by[c])
        if len(seeds) < 2:
            continue
        row = {"n": len(seeds)}
        for part in ("val", "test"):
            row[part] = mean_std([by[c][s][f"{part}_accuracy"] for s in seeds])
            paired = [by[c][s][f"{part}_accuracy"] - by["kd"][s][f"{part}_accuracy"] for s in seeds if s in by["kd"]]
            row[f"{part}_minus_kd"] = mean_std(paired) if len(paired) >= 2 and c != "kd" else None
        out[c] = row
    return out


def table(summary: dict) -> str:
    pct = lambda ms: f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"
    pts = lambda ms: "–" if ms is None else f"{100 * ms[0]:+.2f} ± {100 * ms[1]:.2f}"
    lines = ["| condition | seeds | val acc (%) | test acc (%) | val − KD (points) | test − KD (points) |",
             "|---|---:|---:|---:|---:|---:|"]
    for c, r in summary.items():
        lines.append(f"| {c} | {r['n']} | {pct(r['val'])} | {pct(r['test'])} | {pts(r['val_minus_kd'])} | "
                     f"{pts(r['test_minus_kd'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="  [kdnas] %(message)s", stream=sys.stdout)  # AssistantPool says what it trains
    started = Clock()
    say = lambda line: print(line, flush=True)  # progress must show live when stdout is a log file
    command = "PYTHONPATH=. python benchmarks/reproduce_chain.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    say(f"$ {command}")

    split = load_split(args.data, "cpu")
    spec = lambda depth: make_spec({"family": "resnet_cifar", "depth": depth, "width": args.width})
    t_spec, a_spec, s_spec = spec(args.teacher_depth), spec(args.assistant_depth), spec(args.student_depth)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    t_recipe = TrainRecipe(epochs=args.teacher_epochs, batch_size=args.batch_size, lr=args.lr)
    kd = MethodSpec("hinton", {"temperature": args.temperature, "alpha": args.alpha})
    params = {name: count(s, split.input_shape, split.num_classes).params
              for name, s in (("teacher", t_spec), ("assistant", a_spec), ("student", s_spec))}
    result = {
        "command": command, "data": {"config": vars(args.data), **split.sizes(), "fingerprint": split.fingerprint},
        "archs": {"teacher": t_spec.to_dict(), "assistant": a_spec.to_dict(), "student": s_spec.to_dict()},
        "params": params, "recipe": recipe.to_dict(), "teacher_recipe": t_recipe.to_dict(), "method": kd.to_dict(),
        "drop_rate": args.drop_rate, "threads": args.threads,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine()},
        "teacher": None, "assistants": [], "runs": [],
    }
    say(f"data mnist5k {split.sizes()}; teacher {t_spec.label()} {params['teacher']:,} params, assistant "
        f"{a_spec.label()} {params['assistant']:,}, student {s_spec.label()} {params['student']:,}")
    say(f"recipe: {args.epochs} epochs (teacher {args.teacher_epochs}), batch {args.batch_size}, SGD lr {args.lr} "
        f"cosine; KD {kd.label()}; DGKD drop rate {args.drop_rate}; seeds 0..{args.seeds - 1}; {args.threads} thread(s)")

    def write() -> None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="reproduce_chain-") as tmp:
        store = ArtifactStore(args.cache if args.cache is not None else Path(tmp))
        teacher, result["teacher"] = train_teacher(t_spec, t_recipe, split, store, say)
        ti = result["teacher"]
        say(f"teacher: val {ti['val_accuracy']:.2%}, test {ti['test_accuracy']:.2%} "
            f"({'trained' if ti['trained_now'] else 'loaded'} in {ti['wall_s']:.0f}s)")
        write()
        for seed in range(args.seeds):
            a_seed = ASSISTANT_SEED_OFFSET + seed
            # The assistant distils from the teacher with the students' KD loss and recipe. Its key does not
            # depend on the mode with one assistant, so DGKD gets the very network TAKD trained.
            pool = AssistantPool(split, store, torch.device("cpu"), recipe, kd, args.drop_rate, a_seed)
            clock = Clock()
            takd_guides, records = pool.chain(teacher, Chain("takd", (a_spec,)))
            dgkd_guides, again = pool.chain(teacher, Chain("dgkd", (a_spec,)))
            assert not again[0]["trained_now"] and again[0]["key"] == records[0]["key"]  # trained once, shared
            assistant = takd_guides[0]
            a_info = {"seed": a_seed, "key": records[0]["key"], "trained_now": records[0]["trained_now"],
                      "val_accuracy": accuracy(assistant.model, split.val),
                      "test_accuracy": accuracy(assistant.model, split.test), **clock.read()}
            result["assistants"].append(a_info)
            say(f"seed {seed}: assistant (seed {a_seed}) val {a_info['val_accuracy']:.2%}, "
                f"test {a_info['test_accuracy']:.2%} ({a_info['wall_s']:.0f}s)")
            setups = {"none": (MethodSpec("none"), []), "kd": (kd, [teacher]), "takd": (kd, takd_guides),
                      "dgkd": (kd, dgkd_guides)}
            for condition, (method, guides) in setups.items():
                run = {"condition": condition, "seed": seed, "guides": [g.name for g in guides],
                       **train_student(s_spec, method, guides, recipe, split, args.drop_rate, seed)}
                result["runs"].append(run)
                write()
                say(f"seed {seed}: {condition:5} val {run['val_accuracy']:.2%}  test {run['test_accuracy']:.2%}  "
                    f"({run['wall_s']:.0f}s wall, {run['cpu_s']:.0f}s CPU)")

    result["summary"] = summarise(result["runs"])
    result["total"] = started.read()
    write()
    say(f"\nstudent {s_spec.label()}, mean ± sample std over {args.seeds} seeds; '− KD' is the per-seed difference "
        f"to KD (same initial weights and batch order), in accuracy points\n")
    say(table(result["summary"]))
    say(f"\nteacher val {ti['val_accuracy']:.2%} test {ti['test_accuracy']:.2%}; assistants val "
        + ", ".join(f"{a['val_accuracy']:.2%}" for a in result["assistants"]))
    say(f"total {result['total']['wall_s']:.0f}s wall, {result['total']['cpu_s']:.0f}s CPU; command: {command}")
    return result


if __name__ == "__main__":
    main()
