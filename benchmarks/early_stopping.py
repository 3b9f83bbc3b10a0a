"""Benchmark (d): one multi-objective study with early stopping on and off, under the same wall-clock budget.

Both sides run the same derived study (default ``studies/quickstart.yaml``: objectives accuracy, params and
latency; ``threads: 1``) under the same budget; the only difference is ``search.early_stopping``: as
shipped (on: at half of the student's epochs, a trial below the median of at least 4 earlier trials with
at most 1.25x its parameters is stopped and recorded as PRUNED with the reason) or ``enabled: false``.

Each side is one study, grown by ``--rounds`` real `kdnas search --timeout S` commands (fresh processes; no
trial starts after S seconds from the start of the command, the running one finishes, then the report is
written), alternating between the sides: round 1 runs on then off, round 2 off then on, and so on, so that
load from other processes hits both alike (on a shared machine it changes from minute to minute). The
teacher is trained once first and copied into both run folders, so that neither side spends budget on it.

The sampler is the random one (``--sampler tpe`` for the study's own), and each round gives both sides the
same sampler seed: kdnas seeds a resumed command's sampler with ``seed`` + the number of stored trials, so
the script passes ``--seed`` = the round's seed - that number. Both sides then draw the same candidates in
the same order in every round, and the side with early stopping trains the other side's candidates, except
that it stops some halfway, and gets further down the list. (Trial seeds, derived from ``seed`` and the
trial number, differ between the sides.) With TPE the two sides part after the first stopped trial, and
since a trial's time varies about tenfold over the space, which candidates each side happens to draw would
weigh as much as early stopping itself.

Printed per side: completed, pruned and failed trials, trials finished per hour of budget (the sum of the
commands' timeouts), per hour of wall time (the commands' whole run: start-up, the trial running at the
timeout, the report) and per CPU hour, and every prune reason; the ratio of trials finished per budget,
on / off; and, as a check, the training time the stopped trials did not spend, estimated from their own
durations: the gain to expect from early stopping alone.

    PYTHONPATH=. python benchmarks/early_stopping.py [--study quickstart.yaml] [--rounds 6] [--timeout 50] [--smoke]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="quickstart.yaml", help="a shipped multi-objective study (in studies/) or a path")
    ap.add_argument("--rounds", type=int, default=6, help="`kdnas search` commands per side, alternating")
    ap.add_argument("--timeout", type=float, default=50, help="`--timeout` seconds of each command")
    ap.add_argument("--sampler", choices=["random", "tpe"], default="random")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every side (study `threads`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help="a check in seconds (tests/test_benchmarks.py runs it): one command of 2 trials per side, on the tiny "
                         "study of _studies.SMOKE; figures mean nothing")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder, removed)")
    args = ap.parse_args()
    if args.smoke:  # 2 trials per side, not a short timeout: a busy machine must not leave a side without a trial
        args.rounds, args.timeout = 1, 120

    with _studies.work_folder(args.keep, "kdnas-early-stopping-") as tmp:
        run(args, tmp)


def reason_kind(reason: str) -> str:
    """A prune reason with its numbers taken out, to group reasons of the same kind."""
    return re.sub(r"\d[\d,.]*%?", "#", reason)


def run(args, tmp: Path) -> None:
    sides = ("on", "off")
    base = {"seed": args.seed, "threads": args.threads,
            "search": {"trials": 2 if args.smoke else 100000, "sampler": args.sampler}}
    studies = {s: _studies.derive(args.study, tmp / s, _studies.merge(
        base, {"search": {"early_stopping": {} if s == "on" else {"enabled": False}}}), smoke=args.smoke) for s in sides}
    budget = args.rounds * args.timeout
    print(f"study {args.study} ({args.sampler} sampler, threads {args.threads}): early stopping on (as shipped) vs "
          f"off; {args.rounds} x `kdnas search --timeout {args.timeout:g}` per side ({budget:g}s of budget each); "
          f"{_studies.machine()}", flush=True)
    teacher_s = _studies.pretrain_teacher(studies["on"], tmp, [tmp / s for s in sides])
    print(f"teacher trained once for both sides in {teacher_s:.1f}s", flush=True)

    wall = {s: 0.0 for s in sides}
    cpu = {s: 0.0 for s in sides}
    stored = {s: 0 for s in sides}
    same = True
    for r in range(args.rounds):
        got = {}
        for s in sides if r % 2 == 0 else sides[::-1]:
            seed = args.seed + 100003 * (r + 1) - stored[s]  # the sampler's seed: this + the stored trials
            w, c = _studies.kdnas_search(studies[s], tmp / s, ["--timeout", f"{args.timeout:g}", "--seed", str(seed)],
                                         log=tmp / f"{s}.log")
            wall[s] += w
            cpu[s] += c
            got[s] = _studies.trials(tmp / s, studies[s])[stored[s]:]
            stored[s] += len(got[s])
            state = Counter(t.state.name for t in got[s])
            print(f"  round {r + 1}: early stopping {s:3s}: {len(got[s]):3d} trials ({state['COMPLETE']:2d} completed, "
                  f"{state['PRUNED']:2d} pruned) in {w:6.1f}s wall, {c:6.1f}s cpu", flush=True)
        same &= all(a.user_attrs.get("candidate") == b.user_attrs.get("candidate") for a, b in zip(got["on"], got["off"]))
    trials = {s: _studies.trials(tmp / s, studies[s]) for s in sides}

    print()
    print(f"{'early stopping':15s} {'completed':>10s} {'pruned':>7s} {'failed':>7s} {'finished':>9s} "
          f"{'per budget-hour':>16s} {'wall s':>8s} {'per wall-hour':>14s} {'cpu s':>8s} {'per cpu-hour':>13s} "
          f"{'best val':>9s}")
    rate, wall_rate, cpu_rate = {}, {}, {}
    for s in sides:
        ts = trials[s]
        state = Counter(t.state.name for t in ts)
        finished = sum(t.state.is_finished() for t in ts)
        rate[s] = finished / budget * 3600
        wall_rate[s] = finished / wall[s] * 3600
        cpu_rate[s] = finished / cpu[s] * 3600
        done = [t.user_attrs["val_accuracy"] for t in ts if t.state.name == "COMPLETE"]
        print(f"{s:15s} {state['COMPLETE']:10d} {state['PRUNED']:7d} {state['FAIL']:7d} {finished:9d} {rate[s]:16.0f} "
              f"{wall[s]:8.1f} {wall_rate[s]:14.0f} {cpu[s]:8.1f} {cpu_rate[s]:13.0f} {max(done, default=float('nan')):9.1%}")
    if args.sampler == "random":
        print(f"the same candidates in the same order on both sides, in every round (as far as both got): "
              f"{'yes' if same else 'NO'}")
    for s in sides:
        pruned = [t for t in trials[s] if t.state.name == "PRUNED"]
        if not pruned:
            print(f"\nearly stopping {s}: no trial was pruned")
            continue
        reasons = [t.user_attrs.get("prune_reason") or "" for t in pruned]
        missing = sum(not r for r in reasons)
        print(f"\nearly stopping {s}: {len(pruned)} pruned trials, {len(pruned) - missing} with a recorded reason"
              f"{'' if not missing else f' ({missing} WITHOUT one)'}; the reasons, by kind:")
        kinds = Counter(reason_kind(r) for r in reasons if r)
        for kind, n in kinds.most_common():
            examples = [r for r in reasons if r and reason_kind(r) == kind]
            print(f"  {n:3d} x  {examples[0]}")
            for other in examples[1:]:
                print(f"         {other}")

    stopped = [t for t in trials["on"] if t.state.name == "PRUNED" and t.duration
               and "early stop" in (t.user_attrs.get("prune_reason") or "")]
    done_s = [t.duration.total_seconds() for t in trials["on"] if t.state.name == "COMPLETE" and t.duration]
    if stopped and done_s:
        # A trial stopped after epoch k of n spent about k/n of its training; the rest is what it saved.
        saved = 0.0
        for t in stopped:
            k, n = map(int, re.search(r"after epoch (\d+)/(\d+)", t.user_attrs["prune_reason"]).groups())
            saved += t.duration.total_seconds() * (n - k) / k
        spent = sum(t.duration.total_seconds() for t in trials["on"] if t.duration)
        print(f"\nearly stopping on: a completed trial took {sum(done_s) / len(done_s):.1f}s on average; the "
              f"{len(stopped)} stopped trials would have taken about {saved:.1f}s more to finish, "
              f"{100 * saved / spent:.1f}% of the {spent:.1f}s the side spent in trials: the gain to expect from "
              f"early stopping alone is about {(spent + saved) / spent:.2f}x")
    print(f"trials finished per budget, early stopping on / off: {rate['on'] / rate['off']:.1f}x "
          f"({rate['on'] / rate['off']:.2f}: {rate['on']:.0f} vs {rate['off']:.0f} per hour of budget; per wall-hour "
          f"{wall_rate['on'] / wall_rate['off']:.2f}x, per cpu-hour {cpu_rate['on'] / cpu_rate['off']:.2f}x)")


if __name__ == "__main__":
    main()
