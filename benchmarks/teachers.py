"""Does the choice of teacher matter for small students? (issue #27)

Every candidate of ``studies/mnist5k_teachers.yaml`` (3 small students x {labels only, Hinton KD from each of
three teachers of different size or from the ensemble of the two largest, direct or through one assistant}: 27)
is trained ``--replicates`` times at the study's own budget (18 epochs: a brief one overstates what KD adds,
docs/results.md), as enqueued trials of the study itself, so that ``kdnas report`` on it shows the same
candidates and effects. Then, from the study's candidate table (kdnas.candidates: means over replicates, paired
differences with their seed errors, 90 % intervals):

* each teacher choice: size, validation and test accuracy (one training each);
* per student and teacher choice (direct / one assistant): mean validation accuracy +- half-width (n), and the
  gain over the same student on labels only, paired;
* per teacher choice, over the students: the mean gain, and its difference to the reference teacher (the
  first declared, ResNet-20) over candidates identical but for the teacher.

    PYTHONPATH=. python benchmarks/teachers.py --keep /work/yard/teachers [--workers 2] [--replicates 4]
    PYTHONPATH=. python benchmarks/teachers.py --keep /work/yard/teachers --epochs 3    # the same at a brief budget
    PYTHONPATH=. python benchmarks/teachers.py --smoke       # digits, one student, direct chains, 1 replicate
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _enumerated  # noqa: E402
import _studies  # noqa: E402

from kdnas.candidates import difference, mean_difference  # noqa: E402
from kdnas.config import load_study  # noqa: E402
from kdnas.study import candidates_of, open_study, run_search  # noqa: E402

STUDY = "mnist5k_teachers.yaml"


def grid_for(cfg, smoke: bool) -> list[dict]:
    grid = _enumerated.enumerate_space(cfg.space)
    if smoke:  # one student, direct chains: the code path in seconds
        first = {k: v for k, v in grid[0].items() if k.startswith("student")}
        grid = [p for p in grid if all(p.get(k) == v for k, v in first.items()) and not p.get("chain.length")]
    return grid


def enqueue(study: optuna.Study, grid: list[dict], replicates: int) -> int:
    """Enqueue what is missing for ``replicates`` trainings of every grid point (a rerun adds only that)."""
    have: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING,
                       optuna.trial.TrialState.RUNNING) and not t.user_attrs.get("reused"):
            have[json.dumps(t.params, sort_keys=True)] = have.get(json.dumps(t.params, sort_keys=True), 0) + 1
    added = 0
    for p in grid:
        for _ in range(replicates - have.get(json.dumps(p, sort_keys=True), 0)):
            study.enqueue_trial(p, skip_if_exists=False)
            added += 1
    return added


def _pm(e) -> str:
    return f"{100 * e.mean:.1f} ± {100 * (e.hi - e.mean):.1f}" if hasattr(e, "hi") else ""


def _diff(d) -> str:
    verdict = "within noise" if d.within_noise else ("gain" if d.mean > 0 else "loss")
    return f"{100 * d.mean:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] {verdict}"


def analyse(study: optuna.Study) -> list[str]:
    table = candidates_of(study)
    entries = [e for e in table.estimates() if e.n]
    teachers = study.user_attrs.get("teachers") or {}
    reference = next(iter(k for k, v in teachers.items() if not v.get("members")), None)
    reference = next((k for k, v in teachers.items() if k == (study.user_attrs.get("teacher") or {}).get("name")),
                     reference)
    data = study.user_attrs.get("data") or {}
    lines = [f"Teachers (one training each; val on {data.get('val')}, test on {data.get('test')} images):", "",
             "| teacher | params | val | test |", "|---|---:|---:|---:|"]
    for label, ti in teachers.items():
        lines.append(f"| `{label}` | {ti['params']:,} | {100 * ti['val_accuracy']:.1f} | {100 * ti['test_accuracy']:.1f} |")
    base = {e.attrs["student"]: e for e in entries if e.attrs["method"].startswith("none")}
    cells: dict[tuple, object] = {}
    for e in entries:
        if e.attrs.get("teacher_name"):
            cells[(e.attrs["student"], e.attrs["teacher_name"], int(e.attrs["chain_length"]))] = e
    students = sorted(base, key=lambda s: base[s].attrs["params"])
    choices = [c for c in teachers if any(k[1] == c for k in cells)]
    for chain in (0, 1):
        if not any(k[2] == chain for k in cells):
            continue
        lines += ["", f"Validation accuracy, % (mean ± 90 % half-width over the replicates), "
                      f"{'direct' if chain == 0 else 'through one assistant'}; gain over labels only, paired:", "",
                  "| student | params | labels only | " + " | ".join(f"`{c}`" for c in choices) + " |",
                  "|---|---:|---:|" + "---:|" * len(choices)]
        for s in students:
            b = base[s]
            row = [f"`{s}`", f"{b.attrs['params']:,}", f"{_pm(b.estimate)} ({b.n})"]
            for c in choices:
                e = cells.get((s, c, chain))
                row.append("–" if e is None else f"{_pm(e.estimate)} ({e.n}); {_diff(difference(e.estimate, b.estimate))}")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Over the students (each student's paired difference, averaged; 90 % intervals):", "",
              "| teacher | chain | gain over labels only | minus the reference teacher's |", "|---|---|---|---|"]
    for c in choices:
        for chain in (0, 1):
            gains = [difference(cells[(s, c, chain)].estimate, base[s].estimate) for s in students
                     if (s, c, chain) in cells]
            vs = [difference(cells[(s, c, chain)].estimate, cells[(s, reference, chain)].estimate) for s in students
                  if (s, c, chain) in cells and (s, reference, chain) in cells]
            if gains:
                lines.append(f"| `{c}` | {'direct' if chain == 0 else 'one assistant'} | {_diff(mean_difference(gains))} | "
                             f"{'reference' if c == reference else _diff(mean_difference(vs)) if vs else '–'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default=STUDY)
    ap.add_argument("--replicates", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--epochs", type=int, help="the students' budget instead of the study's (a study of its own, "
                    "named <name>_e<N>; the teachers and assistants of the study's run here are copied, not retrained)")
    ap.add_argument("--keep", help="folder to train in and keep (a rerun there trains only what is missing)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    reps = 1 if args.smoke else args.replicates
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    with _studies.work_folder(args.keep, "kdnas-teachers-") as folder:
        probe = load_study(_studies.derive(args.study, folder, {}, smoke=args.smoke))
        grid = grid_for(probe, args.smoke)
        # Every enqueued trial trains (no re-evaluations beside the grid; each replicate counts up to the cap).
        over = {"search": {"replicates": reps, "intensify": {"enabled": False}, "trials": len(grid) * reps},
                "parallel": {"workers": args.workers}}
        if args.epochs:
            over.update(name=f"{probe.name}_e{args.epochs}", student={"train": {"epochs": args.epochs}})
        cfg = load_study(_studies.derive(args.study, folder, over, smoke=args.smoke))
        if args.epochs:  # the teachers and assistants of the study's own run, where it ran here: not trained again
            for kind in ("teachers", "teacher_eval", "teacher_logits", "assistants"):
                src = probe.run_dir / "artifacts" / kind
                if src.is_dir():
                    shutil.copytree(src, cfg.run_dir / "artifacts" / kind, dirs_exist_ok=True)
        study = open_study(cfg, create=True)
        added = enqueue(study, grid, reps)
        print(f"{len(grid)} candidates x {reps} replicates: {added} trainings to run in {folder}", flush=True)
        t0 = time.perf_counter()
        if added:
            cfg = load_study(cfg.path, {**over, "search": {**over["search"], "trials": added}})
            run_search(cfg, progress=lambda line: None)
        print(f"trained in {time.perf_counter() - t0:.0f} s ({args.workers} worker(s), one thread each)\n")
        print("\n".join(analyse(open_study(cfg, create=False))))


if __name__ == "__main__":
    main()
