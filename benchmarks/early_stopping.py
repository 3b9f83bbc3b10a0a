"""Benchmark (d): one multi-objective study with early stopping on and off, under the same wall-clock budget.

Both sides run the same derived study (default ``studies/quickstart.yaml``: accuracy, params and latency;
TPE; ``threads: 1``), the same seed and the same budget; the only difference is ``search.early_stopping``:
as shipped (on: at half of the student's epochs, a trial below the median of at least 4 earlier trials no
more than 1.25x its size is stopped and recorded as PRUNED with the reason) or ``enabled: false``.

The budget of each side is spent in ``--rounds`` real `kdnas search --timeout S` commands (fresh processes;
no trial starts after S seconds from the start of the command, the running one finishes, then the report
is written), alternating between the sides: round 1 runs on then off, round 2 off then on, and so on, so
that load from other processes hits both alike. The teacher is trained once first and copied into both
sides' run folders, so that neither side spends its budget on it. Printed per side: completed, pruned and
failed trials, the wall time actually used, trials finished per hour of it, and every distinct prune
reason; then the ratio of trials finished per hour, on / off.

    PYTHONPATH=. python benchmarks/early_stopping.py [--study quickstart.yaml] [--budget 240] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="quickstart.yaml", help="a shipped multi-objective study (in studies/) or a path")
    ap.add_argument("--budget", type=float, default=240, help="seconds of `--timeout` per side, over all its rounds")
    ap.add_argument("--rounds", type=int, default=2, help="`kdnas search` commands per side, alternating")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every side (study `threads`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="a check in about a minute: one 25 s command per side, the teacher trained for 2 epochs")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder, removed)")
    args = ap.parse_args()
    if args.quick:
        args.budget, args.rounds = 25, 1

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kdnas-early-stopping-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        run(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def reason_kind(reason: str) -> str:
    """A prune reason with its numbers taken out, to group reasons of the same kind."""
    return re.sub(r"\d[\d,.]*%?", "#", reason)


def run(args, tmp: Path) -> None:
    sides = ("on", "off")
    base = {"seed": args.seed, "threads": args.threads, "search": {"trials": 100000}}
    if args.quick:
        base["teacher"] = {"train": {"epochs": 2}}
    studies = {
        "on": _studies.derive(args.study, tmp / "study-on", base),
        "off": _studies.derive(args.study, tmp / "study-off", _studies.merge(base, {"search": {"early_stopping": {"enabled": False}}})),
    }
    dirs = {s: tmp / s for s in sides}
    per_round = args.budget / args.rounds
    print(f"study {args.study} (threads {args.threads}, seed {args.seed}): early stopping on (as shipped) vs off; "
          f"{args.rounds} x `kdnas search --timeout {per_round:g}` per side; {_studies.machine()}", flush=True)
    teacher_s = _studies.pretrain_teacher(studies["on"], tmp, list(dirs.values()))
    print(f"teacher trained once for both sides in {teacher_s:.1f}s", flush=True)

    wall = {s: 0.0 for s in sides}
    cpu = {s: 0.0 for s in sides}
    seen = {s: 0 for s in sides}
    for r in range(args.rounds):
        for s in sides if r % 2 == 0 else sides[::-1]:
            w, c = _studies.kdnas_search(studies[s], dirs[s], ["--timeout", f"{per_round:g}"], log=tmp / f"{s}.log")
            wall[s] += w
            cpu[s] += c
            n = len(_studies.trials(dirs[s], studies[s]))
            print(f"  round {r + 1}: early stopping {s:3s}: {n - seen[s]:3d} trials in {w:6.1f}s wall, {c:6.1f}s cpu "
                  f"(timeout {per_round:g}s)", flush=True)
            seen[s] = n

    trials = {s: _studies.trials(dirs[s], studies[s]) for s in sides}
    print()
    print(f"{'early stopping':15s} {'completed':>10s} {'pruned':>7s} {'failed':>7s} {'finished':>9s} {'wall s':>8s} "
          f"{'cpu s':>8s} {'finished/hour':>14s} {'per cpu-hour':>13s} {'completed/hour':>15s} {'best val':>9s}")
    rate, cpu_rate = {}, {}
    for s in sides:
        ts = trials[s]
        state = Counter(t.state.name for t in ts)
        finished = sum(t.state.is_finished() for t in ts)
        rate[s] = finished / wall[s] * 3600
        cpu_rate[s] = finished / cpu[s] * 3600
        done = [t.user_attrs["val_accuracy"] for t in ts if t.state.name == "COMPLETE"]
        print(f"{s:15s} {state['COMPLETE']:10d} {state['PRUNED']:7d} {state['FAIL']:7d} {finished:9d} {wall[s]:8.1f} "
              f"{cpu[s]:8.1f} {rate[s]:14.0f} {cpu_rate[s]:13.0f} {state['COMPLETE'] / wall[s] * 3600:15.0f} "
              f"{max(done, default=float('nan')):9.1%}")
    for s in sides:
        pruned = [t for t in trials[s] if t.state.name == "PRUNED"]
        if not pruned:
            print(f"\nearly stopping {s}: no trial was pruned")
            continue
        reasons = [t.user_attrs.get("prune_reason") or "" for t in pruned]
        missing = sum(not r for r in reasons)
        print(f"\nearly stopping {s}: {len(pruned)} pruned trials, {len(pruned) - missing} with a recorded reason"
              f"{'' if not missing else f' ({missing} WITHOUT one)'}; by kind:")
        kinds = Counter(reason_kind(r) for r in reasons if r)
        for kind, n in kinds.most_common():
            example = next((t.number, r) for t, r in zip(pruned, reasons) if r and reason_kind(r) == kind)
            print(f"  {n:3d} x  e.g. trial {example[0]}: {example[1]}")
    saved = [t for t in trials["on"] if t.state.name == "PRUNED" and "early stop" in (t.user_attrs.get("prune_reason") or "")]
    if saved:
        done_s = [t.duration.total_seconds() for t in trials["on"] if t.state.name == "COMPLETE" and t.duration]
        pruned_s = [t.duration.total_seconds() for t in saved if t.duration]
        print(f"\nearly stopping on: a completed trial took {sum(done_s) / len(done_s):.1f}s on average, "
              f"an early-stopped one {sum(pruned_s) / len(pruned_s):.1f}s")
    print(f"trials finished per hour, early stopping on / off: {rate['on'] / rate['off']:.1f}x "
          f"({rate['on']:.0f} vs {rate['off']:.0f}; per cpu-hour {cpu_rate['on'] / cpu_rate['off']:.1f}x)")


if __name__ == "__main__":
    main()
