"""Benchmark (b): one study with kdnas's caches on and off, in trials per hour.

What "caches" means here, and what each side does:

- **on** (kdnas as shipped): the teacher's logits on the training split are a per-study table, computed
  once and read back by every trial (and by every later command); each teacher assistant is stored by
  content in the run folder, trained by the first trial that needs it and loaded by every later one; its
  logits are a table too.
- **off**: the teacher (and each assistant) runs forward on every training batch of every trial, as
  happens when the students' inputs are randomly augmented, and every trial trains the assistants of its
  chain itself. Done by patching, in the `kdnas search` process of this side only,
  ``kdnas.study._teachers.teacher_logits`` and ``kdnas.distill._chain.teacher_logits`` (they return the per-batch
  provider, as with ``random_augment=True``; the inputs stay un-augmented, so both sides train on the same
  data) and ``AssistantPool.get`` (no memory, a throw-away store). No library code is changed.

The teacher's own content cache saves its training once per `kdnas search` command (rerun, resume, each
worker), not per trial; it is not a side here: the teacher is trained once first and copied into both
sides' run folders, and the script prints what that cache saves per command.

Both sides run the same derived study (default ``studies/digits_chain.yaml``: ResNet students taught
directly or through 1-2 assistants; ``threads: 1``), with the random sampler and early stopping off, so
that the two sides sample exactly the same candidates (the same seeds, the same trial numbers) and train
them for the same epochs: the only difference is the caches. Each side is a series of real
`kdnas search --trials K` commands (fresh processes, the report written at the end of each, as a user
runs them) alternating between the sides: round 1 runs on then off, round 2 off then on, and so on, so
that load from other processes hits both alike. Trials per hour = trials finished / the summed wall time
of that side's commands.

    PYTHONPATH=. python benchmarks/caches.py [--study digits_chain.yaml] [--rounds 2] [--trials 15] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402


# --- inside a `kdnas search` process of one side -------------------------------------------------------

def child(side: str, stats_path: str, argv: list[str]) -> int:
    """`kdnas search ...` with the caches of ``side`` ("on" or "off"), recording where time went."""
    import kdnas.distill._chain as chain_mod
    import kdnas.study._teachers as study_mod
    import kdnas.study._teacher as teacher_mod
    from kdnas.core import ArtifactStore
    from kdnas.cli import main
    from kdnas.distill import TeacherLogits

    # Per-batch forward passes are counted apart while an assistant is being trained (``in_assistant``): its
    # own time, assistant_s, includes them.
    stats = {"teacher_forward_s": 0.0, "teacher_forward_calls": 0, "assistant_forward_s": 0.0, "assistant_s": 0.0,
             "assistants_trained": 0, "assistants_loaded": 0, "get_teacher_s": 0.0, "logits_table_s": 0.0}
    in_assistant = []

    per_batch = TeacherLogits.__call__

    def timed_call(self, batch):
        if self.table is not None:
            return per_batch(self, batch)
        t0 = time.perf_counter()
        try:
            return per_batch(self, batch)
        finally:
            if in_assistant:
                stats["assistant_forward_s"] += time.perf_counter() - t0
            else:
                stats["teacher_forward_s"] += time.perf_counter() - t0
                stats["teacher_forward_calls"] += 1

    TeacherLogits.__call__ = timed_call

    real_logits = study_mod.teacher_logits
    assert chain_mod.teacher_logits is real_logits, "kdnas.distill._chain no longer imports teacher_logits by name"

    def logits(model, key, split, store, random_augment):
        if side == "off":
            return TeacherLogits(model)  # what teacher_logits returns with random_augment=True
        t0 = time.perf_counter()
        try:
            return real_logits(model, key, split, store, random_augment=random_augment)
        finally:
            stats["logits_table_s"] += time.perf_counter() - t0

    study_mod.teacher_logits = chain_mod.teacher_logits = logits

    real_get = chain_mod.AssistantPool.get

    def get(self, spec, parents, trial_number=None):
        t0 = time.perf_counter()
        store = self.store
        if side == "off":
            self._guides.clear()
            self.store = ArtifactStore(Path(tempfile.mkdtemp(prefix="assistant-", dir=store.root)))
        in_assistant.append(spec)
        try:
            guide, trained = real_get(self, spec, parents, trial_number)
        finally:
            in_assistant.pop()
            if side == "off":
                shutil.rmtree(self.store.root, ignore_errors=True)
                self.store = store
        stats["assistant_s"] += time.perf_counter() - t0
        stats["assistants_trained" if trained else "assistants_loaded"] += 1
        return guide, trained

    chain_mod.AssistantPool.get = get

    real_teacher = teacher_mod.get_teacher

    def get_teacher(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_teacher(*a, **k)
        finally:
            stats["get_teacher_s"] += time.perf_counter() - t0

    study_mod.get_teacher = get_teacher
    try:
        return main(argv)
    finally:
        Path(stats_path).write_text(json.dumps(stats))


# --- the benchmark ------------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":  # python caches.py --_child SIDE STATS search ...
        sys.exit(child(sys.argv[2], sys.argv[3], sys.argv[4:]))

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="digits_chain.yaml", help="a shipped study (in studies/) or a path")
    ap.add_argument("--rounds", type=int, default=2, help="`kdnas search` commands per side, alternating")
    ap.add_argument("--trials", type=int, default=15, help="trials per command")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every side (study `threads`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help="a check in seconds (tests/test_benchmarks.py runs it): one command of 2 trials per side, on the tiny "
                         "study of _studies.SMOKE; figures mean nothing")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder, removed)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.trials = 1, 2

    with _studies.work_folder(args.keep, "kdnas-caches-") as tmp:
        run(args, tmp)


def run(args, tmp: Path) -> None:
    overrides = {"seed": args.seed, "threads": args.threads,
                 "search": {"trials": args.trials, "sampler": "random", "early_stopping": {"enabled": False}}}
    sides = ("on", "off")
    dirs = {s: tmp / s for s in sides}
    # The same study file in each side's folder: kdnas keeps its run folder beside the study file.
    studies = {s: _studies.derive(args.study, dirs[s], overrides, smoke=args.smoke) for s in sides}
    print(f"study {args.study} -> {studies['on'].name} (threads {args.threads}, random sampler, early stopping off); "
          f"{args.rounds} rounds x {args.trials} trials per side; {_studies.machine()}", flush=True)
    teacher_s = _studies.pretrain_teacher(studies["on"], tmp, list(dirs.values()))  # once, copied into both
    print(f"teacher trained once for both sides in {teacher_s:.1f}s", flush=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    wall = {s: 0.0 for s in sides}
    cpu = {s: 0.0 for s in sides}
    rounds = {s: [] for s in sides}
    stats = {s: [] for s in sides}
    for r in range(args.rounds):
        for s in sides if r % 2 == 0 else sides[::-1]:
            stats_file = tmp / f"stats-{s}-{r}.json"
            w, c = _studies.kdnas_search(studies[s], dirs[s], ["--trials", str(args.trials)], log=tmp / f"{s}.log",
                                         python=[*me, "--_child", s, str(stats_file)])
            wall[s] += w
            cpu[s] += c
            rounds[s].append(w)
            stats[s].append(json.loads(stats_file.read_text()))
            print(f"  round {r + 1}: caches {s:3s}: {args.trials} trials in {w:6.1f}s wall, {c:6.1f}s cpu", flush=True)

    trials = {s: _studies.trials(dirs[s], studies[s]) for s in sides}
    total = {s: {k: sum(st[k] for st in stats[s]) for k in stats[s][0]} for s in sides}
    same = [t.user_attrs.get("candidate") for t in trials["on"]] == [t.user_attrs.get("candidate") for t in trials["off"]]
    print()
    print(f"{'caches':8s} {'trials':>7s} {'completed':>10s} {'screened':>9s} {'wall s':>8s} {'cpu s':>8s} "
          f"{'trials/hour':>12s} {'per cpu-hour':>13s} {'val acc (mean)':>15s}")
    rate, cpu_rate = {}, {}
    for s in sides:
        ts = trials[s]
        done = [t for t in ts if t.state.name == "COMPLETE"]
        finished = sum(t.state.is_finished() for t in ts)
        rate[s] = finished / wall[s] * 3600
        cpu_rate[s] = finished / cpu[s] * 3600
        acc = statistics.mean(t.user_attrs["val_accuracy"] for t in done) if done else float("nan")
        print(f"{s:8s} {finished:7d} {len(done):10d} {finished - len(done):9d} {wall[s]:8.1f} {cpu[s]:8.1f} "
              f"{rate[s]:12.0f} {cpu_rate[s]:13.0f} {acc:15.2%}")
    print(f"same candidates, in the same order, on both sides: {'yes' if same else 'NO'}")
    on, off = total["on"], total["off"]
    print(f"caches on:  teacher logit table computed once in {on['logits_table_s']:.1f}s (all tables, loads included); "
          f"{on['assistants_trained']} assistants trained, {on['assistants_loaded']} uses from memory or store, "
          f"{on['assistant_s']:.1f}s in all")
    print(f"caches off: {off['teacher_forward_calls']} per-batch forward passes of teacher/assistants in the students' "
          f"training, {off['teacher_forward_s']:.1f}s; {off['assistants_trained']} assistants trained, "
          f"{off['assistant_s']:.1f}s (of which {off['assistant_forward_s']:.1f}s their own guides' per-batch passes)")
    loaded = statistics.median(st["get_teacher_s"] for st in stats["on"])
    print(f"teacher content cache (per command, not per trial): trained in {teacher_s:.1f}s, loaded in {loaded:.1f}s "
          f"(median of {len(stats['on'])} commands; evaluation of the teacher on val and test included)")
    print("per command, caches on / off: " + ", ".join(
        f"round {r + 1} {off_w / on_w:.1f}x" for r, (on_w, off_w) in enumerate(zip(rounds["on"], rounds["off"])))
        + " (later commands find more of their assistants already trained)")
    print(f"trials per hour, caches on / off: {rate['on'] / rate['off']:.1f}x (wall; {cpu_rate['on'] / cpu_rate['off']:.1f}x "
          f"in cpu time)")


if __name__ == "__main__":
    main()
