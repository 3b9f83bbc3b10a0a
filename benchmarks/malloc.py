"""glibc's default malloc thresholds against kdnas's (kdnas/core/_malloc.py): training speed, side by side.

kdnas sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` at start-up so that the memory a training
step frees is reused by the next step instead of being returned to the kernel and faulted in again.
``KDNAS_MALLOC=default`` leaves glibc as it is: that is the reference here, the same code otherwise.

1. **Training** (always): kdnas's engine (``kdnas.train._fit.fit``) trains each of three mnist5k students, one
   per family, for ``--epochs`` on the mnist5k training split (batch 128, labels only), each fit in a fresh
   process, the two settings alternating within every round (which goes first alternates too). Printed per
   student and setting: the median seconds per fit, page faults per step and the kernel's share of the CPU
   time; then the speed ratio per student and the geometric mean over all pairs, ``N.Nx``.
2. **A study** (``--study-trials N``): the same ``N`` candidates (drawn once, enqueued in both fresh
   studies), the same teacher (trained once, copied in), early stopping off, run as a user runs it (one
   `kdnas search` command per side, everything at the shipped settings of ``studies/mnist5k.yaml``).
   Printed: wall time per side and the ratio.

This machine is a 2-core VM shared with other work; single fits vary by 30 % from one minute to the next,
so the pairs are interleaved and the ratio is taken over all of them.

    PYTHONPATH=. python benchmarks/malloc.py [--rounds 5] [--epochs 1] [--threads 2] [--study-trials 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

SETTINGS = ("default", "kdnas")  # KDNAS_MALLOC=default: glibc as it is; unset: kdnas's thresholds
STUDENTS = {
    "resnet": {"family": "resnet_cifar", "depth": 14, "width": 0.375},
    "mobilenetv2": {"family": "mobilenetv2", "blocks": [1, 1, 1], "expansion": 4, "kernel_size": 5, "width": 0.5},
    "plain_cnn": {"family": "plain_cnn", "channels": [16, 16, 32, 32], "hidden": 0, "kernel_size": 5, "pool_every": 2},
}


def _env(setting: str) -> dict[str, str]:
    env = _studies.child_env()
    env.pop("KDNAS_MALLOC", None)
    if setting == "default":
        env["KDNAS_MALLOC"] = "default"
    return env


def _fit_child(student: str, threads: int, epochs: int) -> None:
    """Child process: one fit of ``student`` on mnist5k; print its seconds, steps, page faults, CPU times."""
    from kdnas.core import _malloc

    tuned = _malloc.tune()
    import torch
    import torch.nn.functional as F

    from kdnas.data import DataConfig, load_split
    from kdnas.models import build, make_spec
    from kdnas.train import TrainRecipe, fit

    torch.set_num_threads(threads)
    split = load_split(DataConfig("mnist5k"))
    recipe = TrainRecipe(epochs=epochs, batch_size=128, lr=0.1)
    torch.manual_seed(0)
    model = build(make_spec(STUDENTS[student]), split.input_shape, split.num_classes)
    steps = 0

    def loss(out, batch):
        nonlocal steps
        steps += 1
        return F.cross_entropy(out, batch.y)

    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fit(model, split.train, recipe, loss, 0)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"tuned": tuned, "seconds": seconds, "steps": steps, "faults": after.ru_minflt - before.ru_minflt,
                      "user": after.ru_utime - before.ru_utime, "system": after.ru_stime - before.ru_stime}))


def _fit(student: str, setting: str, threads: int, epochs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "fit", student, str(threads), str(epochs)], env=_env(setting),
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the {setting} fit of {student} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["tuned"] != (setting == "kdnas"):
        sys.exit(f"the {setting} fit ran with tuned={result['tuned']}: is this glibc, and is MALLOC_* unset?")
    return result


def training(args) -> None:
    print(f"training: {len(STUDENTS)} students x {args.rounds} rounds, {args.epochs} epoch(s) per fit, "
          f"{args.threads} thread(s); {_studies.machine()}", flush=True)
    runs: dict[tuple[str, str], list[dict]] = {(s, k): [] for s in STUDENTS for k in SETTINGS}
    for r in range(args.rounds):
        for student in STUDENTS:
            for setting in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                runs[(student, setting)].append(_fit(student, setting, args.threads, args.epochs))
        pairs = "  ".join(f"{s} {runs[(s, 'default')][-1]['seconds']:.1f}/{runs[(s, 'kdnas')][-1]['seconds']:.1f}s"
                          for s in STUDENTS)
        print(f"  round {r + 1}: default/kdnas {pairs}", flush=True)
    logs = []
    print(f"\n  {'student':12s} {'setting':8s} {'median s':>9s} {'faults/step':>12s} {'kernel CPU':>11s}")
    for student in STUDENTS:
        for setting in SETTINGS:
            rs = runs[(student, setting)]
            faults = statistics.median(x["faults"] / x["steps"] for x in rs)
            kernel = sum(x["system"] for x in rs) / sum(x["user"] + x["system"] for x in rs)
            print(f"  {student:12s} {setting:8s} {statistics.median(x['seconds'] for x in rs):9.2f} {faults:12,.0f} "
                  f"{kernel:10.1%}")
        ratios = [d["seconds"] / k["seconds"] for d, k in zip(runs[(student, "default")], runs[(student, "kdnas")])]
        logs += [math.log(x) for x in ratios]
        print(f"  {student:12s} speed-up per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"median {statistics.median(ratios):.2f}x")
    faster = sum(x > 0 for x in logs)
    print(f"\ntraining speed, kdnas's thresholds over glibc's default: {math.exp(statistics.mean(logs)):.2f}x "
          f"(geometric mean of {len(logs)} pairs, {faster} of them faster)", flush=True)


def study(args) -> None:
    from workers_vs_threads import candidates, enqueue

    with _studies.work_folder(args.keep, "kdnas-malloc-") as tmp:
        overrides = {"search": {"trials": args.study_trials, "early_stopping": {"enabled": False}}}
        path = _studies.derive(args.study, tmp, overrides)
        params = candidates(path, args.study_trials, 0)
        folders = {(r, s): tmp / f"r{r}-{s}" for r in range(args.study_rounds) for s in SETTINGS}
        teacher_s = _studies.pretrain_teacher(path, tmp, list(folders.values()))
        print(f"\nstudy {args.study}: {args.study_trials} enqueued candidates, early stopping off; teacher trained "
              f"once ({teacher_s:.1f}s) and copied in", flush=True)
        walls: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for r in range(args.study_rounds):
            for setting in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                cwd = folders[(r, setting)]
                enqueue(path, cwd, params)
                wall, _ = _studies.kdnas_search(path, cwd, ["--trials", str(args.study_trials)],
                                                log=cwd / "search.log", env=_env(setting))
                done = sum(t.state.is_finished() for t in _studies.trials(cwd, path))
                walls[setting].append(wall)
                print(f"  round {r + 1}, {setting:8s}: {wall:7.1f}s wall, {done} trials finished", flush=True)
        d, k = sum(walls["default"]), sum(walls["kdnas"])
        print(f"study wall time, glibc's default {d:.1f}s, kdnas's thresholds {k:.1f}s: {d / k:.2f}x")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "fit":
        _fit_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the training comparison")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per fit (mnist5k: 24 steps of 128 per epoch)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per fit")
    ap.add_argument("--study", default="mnist5k.yaml", help="a shipped study (in studies/) or a path")
    ap.add_argument("--study-trials", type=int, default=0, help="also run the study comparison with this many trials")
    ap.add_argument("--study-rounds", type=int, default=1)
    ap.add_argument("--keep", help="keep the study folders here (default: a temporary folder, removed)")
    args = ap.parse_args()
    if args.rounds:
        training(args)
    if args.study_trials:
        study(args)


if __name__ == "__main__":
    main()
