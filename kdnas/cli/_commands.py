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
                                                                         "storage")})


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
    from kdnas.results import write_report
    from kdnas.study import front_trials, run_search

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
    paths = write_report(study, cfg.report_dir)
    front = front_trials(study)
    done = sum(t.state.name == "COMPLETE" for t in study.trials)
    print(f"\n{done} completed trials in study {cfg.name!r}; Pareto front ({len(front)} trials):")
    for t in sorted(front, key=lambda t: t.user_attrs["params"]):
        ua = t.user_attrs
        print(f"  trial {t.number:>3}: val {ua['val_accuracy']:.1%} test {ua['test_accuracy']:.1%}  "
              f"{ua['params']:>9,} params  {ua['latency_ms']:.3f} ms  {ua['student']} {ua['method']}")
    print(f"report: {', '.join(str(p) for p in paths)}")
    if done == 0:
        print("error: no trial completed; see the failure reasons above", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kdnas.results import report

    for p in report(args.study, *args.more, out=args.out, storage=args.storage):
        print(p)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kdnas.bundle import export

    out = export(args.study, args.out, trial=args.trial, pick=args.pick, formats=args.format or (), force=args.force,
                 storage=args.storage)
    recipe = json.loads((out / "recipe.json").read_text())
    print(f"exported trial {recipe['trial']} of {recipe['study']!r} to {out}")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from kdnas.results import agreement, describe, run_fidelity
    from kdnas.study import as_config

    cfg = as_config(args.study, storage=args.storage)
    flags = [f"--{k} {v}" for k, v in (("top", args.top), ("epochs", args.epochs), ("threads", args.threads),
                                       ("device", args.device), ("seed", args.seed)) if v is not None]
    command = " ".join(["kdnas fidelity", args.study, *flags])
    try:
        df, paths = run_fidelity(cfg, args.top, args.epochs, args.device, args.threads, args.seed, command,
                                 say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; run the same command again to continue", file=sys.stderr)
        return 130
    stats = agreement(df)
    print(f"brief vs full validation accuracy: {describe(stats['val'])}")
    print(f"brief vs full test accuracy (reported only): {describe(stats['test'])}")
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
