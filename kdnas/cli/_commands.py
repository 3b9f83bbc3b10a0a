"""The commands on a study file: validate, search, report, export, fidelity, dashboard. Each parses nothing
(kdnas/cli/_main.py does), calls the library, prints."""

from __future__ import annotations

import argparse
import json
import sys

from kdnas.core import KdnasError


def _load(args: argparse.Namespace):
    from kdnas.study import as_config

    return as_config(args.study, **{k: getattr(args, k, None) for k in ("trials", "timeout", "workers", "seed", "device",
                                                                         "precision", "storage")})


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.study import preflight

    for warning in preflight(cfg):  # reads the data and a teacher checkpoint: what would fail later
        print(warning, file=sys.stderr)
    print(f"{args.study}: ok (study {cfg.name!r}, space {cfg.resolve(cfg.search.space)}, "
          f"{len(cfg.space.describe())} searched parameters)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.results import Snapshot, write_report
    from kdnas.study import run_search

    try:
        study = run_search(cfg)
    except KeyboardInterrupt:
        print("interrupted: completed trials are kept; run the same command again to resume", file=sys.stderr)
        from kdnas.study import open_study

        try:
            study = open_study(cfg, create=False)
        except KdnasError:  # interrupted before the study was created (loading data, training the teacher)
            return 130
        write_report(study, cfg.report_dir)
        return 130
    snap = Snapshot.of(study)  # one read: the report and these lines show the same study
    paths = write_report(study, cfg.report_dir, snap=snap)
    for line in search_summary(cfg.name, snap):
        print(line)
    print(f"report: {', '.join(str(p) for p in paths)}")
    if not any(t.state.name == "COMPLETE" for t in snap.trials):
        print("error: no trial completed; see the failure reasons above", file=sys.stderr)
        return 1
    return 0


def search_summary(name: str, snap) -> list[str]:
    """The closing lines of `kdnas search`: trainings, answers from replicates, the front of the candidates' means
    with each member's mean ± 90 % half-width (replicates) and whether it is separable."""
    from kdnas.results import pm, test_estimate
    from kdnas.study import teacher_suffix

    table = snap.table
    reused = sum(t.state.name == "COMPLETE" and bool(t.user_attrs.get("reused")) for t in snap.trials)
    front = snap.front()
    frame = snap.candidates().set_index("candidate")
    # With rungs each member's figures say their budget (@18 ep): members may stand at different ones.
    at = (", @E ep: the budget of the figures; two members compared at the highest budget both reached"
          if snap.rungs else "")
    lines = [f"\n{table.trainings} trainings, {reused} answered from replicates in study {name!r}; "
             f"front of {len(front)} candidates (val: mean ± 90 % half-width (replicates), trial: the replicate "
             f"closest to the mean{at}):"]
    for e in front:  # by increasing parameters
        row = frame.loc[e.key]
        loose = str(row["not_separable_from"] or "").split()
        note = f"  not separable from {', '.join(f'#{n}' for n in loose)}" if loose else ""
        lines.append(f"  trial {int(row['representative']):>3}: val {e.estimate.text()}{snap.budget(e)} test "
                     f"{pm(test_estimate(e, snap.n_test))}  {int(e.attrs['params']):>9,} params  "
                     f"{float(e.attrs['latency_ms']):.3f} ms  {e.attrs['student']} {e.attrs['method']}{teacher_suffix(e.attrs)}{note}")
    return lines


def cmd_report(args: argparse.Namespace) -> int:
    from kdnas.results import report

    for p in report(args.study, *args.more, out=args.out, storage=args.storage):
        print(p)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kdnas.bundle import export

    # With --pick, `export` prints the choice and each runner-up within noise of it.
    out = export(args.study, args.out, trial=args.trial, pick=args.pick, formats=args.format or (), force=args.force,
                 storage=args.storage, say=print)
    recipe = json.loads((out / "recipe.json").read_text())
    print(f"exported trial {recipe['trial']} of {recipe['study']!r} to {out}")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from kdnas.results import agreement, brief_vs_second, describe, run_fidelity, seed_agreement
    from kdnas.study import as_config

    cfg = as_config(args.study, storage=args.storage)
    flags = [f"--{k} {v}" for k, v in (("top", args.top), ("epochs", args.epochs), ("threads", args.threads),
                                       ("device", args.device), ("seed", args.seed), ("seeds", args.seeds))
             if v is not None]
    command = " ".join(["kdnas fidelity", args.study, *flags])
    try:
        df, paths = run_fidelity(cfg, args.top, args.epochs, args.device, args.threads, args.seed, command,
                                 say=lambda line: print(line, flush=True), seeds=args.seeds or 1)
    except KeyboardInterrupt:
        print("interrupted: finished retrainings are kept; run the same command again to continue", file=sys.stderr)
        return 130
    stats, seeds = agreement(df), seed_agreement(df)
    print(f"brief vs full validation accuracy: {describe(stats['val'])}")
    print(f"brief vs full test accuracy (reported only): {describe(stats['test'])}")
    if seeds is not None:
        print(f"full vs full under another seed (the ceiling), validation: {describe(seeds['val'])}; "
              f"test: {describe(seeds['test'])}")
        print(f"brief vs the full training under the 2nd seed (no seed shared), validation: "
              f"{describe(brief_vs_second(df)['val'])}")
    print(f"files: {', '.join(str(p) for p in paths)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.results import serve
    from kdnas.study import open_study

    try:
        serve(cfg, open_study(cfg, create=False), args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0
