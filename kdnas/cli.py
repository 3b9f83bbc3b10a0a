"""The `kdnas` command: one entry, a table of subcommands. Thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from kdnas.errors import KdnasError


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    for key in ("seed", "device", "storage"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    search = {k: getattr(args, k) for k in ("trials", "timeout") if getattr(args, k, None) is not None}
    if search:
        out["search"] = search
    return out


def _load(args: argparse.Namespace):
    from kdnas.config import load_study

    return load_study(args.study, _overrides(args))


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print(f"{args.study}: ok (study {cfg.name!r}, space {cfg.resolve(cfg.search.space)}, "
          f"{len(cfg.space.describe())} searched parameters)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.report import write_report
    from kdnas.study import front_trials, search

    try:
        study = search(cfg)
    except KeyboardInterrupt:
        print("interrupted: completed trials are kept; run the same command again to resume", file=sys.stderr)
        from kdnas.study import open_study

        study = open_study(cfg, create=False)
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
    cfg = _load(args)
    from kdnas.report import write_report
    from kdnas.study import open_study

    study = open_study(cfg, create=False)
    out = Path(args.out) if args.out else cfg.report_dir
    for p in write_report(study, out):
        print(p)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.export import export_trial
    from kdnas.study import open_study

    study = open_study(cfg, create=False)
    out = export_trial(cfg, study, args.trial, Path(args.out), force=args.force)
    print(f"exported trial {args.trial} of {cfg.name!r} to {out}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from kdnas.costs._profile import check_setting, format_profile, load_arch, parse_input_shape, profile

    spec = load_arch(Path(args.arch))
    shape = parse_input_shape(args.input)
    flags = {"device": args.device, "batch_size": args.batch_size, "threads": args.threads, "dtype": args.dtype,
             "min_seconds": args.min_seconds, "max_seconds": args.max_seconds}
    setting = None if args.no_latency else check_setting({k: v for k, v in flags.items() if v is not None}, "kdnas profile")
    table = None
    if args.estimate and setting is not None:
        from kdnas.costs import LatencyTable

        table = LatencyTable()
    result = profile(spec, shape, args.classes, args.counter, setting, table)
    print(json.dumps(result, indent=1) if args.json else format_profile(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdnas", description="Search small, fast students by knowledge distillation.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("study", help="study file (YAML)")
        sp.set_defaults(func=func)
        return sp

    sp = add("search", cmd_search, "run (or resume) a study and write its report")
    sp.add_argument("--trials", type=int, help="trials to add in this run (default: search.trials)")
    sp.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    sp.add_argument("--storage", help="Optuna storage URL (default: sqlite in runs/<name>/)")
    sp.add_argument("--seed", type=int, help="sampler and training seed (default: the study's seed)")
    sp.add_argument("--device", help="training device: cpu, cuda, cuda:N")
    sp = add("report", cmd_report, "write trials.csv, pareto.png and summary.md for a study")
    sp.add_argument("--storage", help="Optuna storage URL")
    sp.add_argument("--out", help="output folder (default: reports/<name>/)")
    sp = add("export", cmd_export, "write a trial's student (spec, weights, recipe) as a bundle")
    sp.add_argument("--trial", type=int, required=True, help="trial number")
    sp.add_argument("--out", required=True, help="bundle folder to create")
    sp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    sp.add_argument("--storage", help="Optuna storage URL")
    add("validate", cmd_validate, "check a study file and its search space; run nothing")
    sp = sub.add_parser("profile", help="print params, MACs, FLOPs and latency of one architecture",
                        description="print params, MACs, FLOPs and latency of one architecture")
    sp.set_defaults(func=cmd_profile)
    sp.add_argument("arch", help="architecture file (YAML), e.g. {family: resnet_cifar, depth: 20}")
    sp.add_argument("--input", required=True, help="input shape C,H,W, e.g. 3,32,32")
    sp.add_argument("--classes", type=int, required=True, help="number of classes")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--counter", default="flop_counter", help="MAC counter: flop_counter (default), fvcore, thop")
    sp.add_argument("--device", help="latency device: cpu (default), cuda, cuda:N, mps")
    sp.add_argument("--batch-size", type=int, help="latency batch size (default 1)")
    sp.add_argument("--threads", type=int, help="latency threads (default 1)")
    sp.add_argument("--dtype", help="latency dtype: float32 (default), float16, bfloat16")
    sp.add_argument("--min-seconds", type=float, help="measure latency at least this long (default 0.5)")
    sp.add_argument("--max-seconds", type=float, help="and at most this long (default 10)")
    sp.add_argument("--no-latency", action="store_true", help="count only; do not measure latency")
    sp.add_argument("--estimate", action="store_true", help="also estimate latency from the per-layer lookup table")
    return p


def _setup_logging() -> None:
    import warnings

    log = logging.getLogger("kdnas")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    import optuna

    # kdnas prints its own progress line per trial; Optuna's own INFO lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return args.func(args)
    except KdnasError as err:
        print(f"kdnas: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
