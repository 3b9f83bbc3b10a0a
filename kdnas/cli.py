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
    if getattr(args, "workers", None) is not None:
        out["parallel"] = {"workers": args.workers}
    return out


# The study keys flags set: a problem with one names the flag the user typed, not the study file.
_FLAGS = {"seed": "--seed", "device": "--device", "storage": "--storage", "search.trials": "--trials",
          "search.timeout": "--timeout", "parallel.workers": "--workers"}


def _load(args: argparse.Namespace):
    from kdnas.config import load_study

    return load_study(args.study, _overrides(args), _FLAGS)


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.preflight import preflight

    for warning in preflight(cfg):  # reads the data and a teacher checkpoint: what would fail later
        print(warning, file=sys.stderr)
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
    from kdnas.config import load_study
    from kdnas.report import compare, write_report
    from kdnas.study import open_study

    overrides = _overrides(args)
    configs = [load_study(path, overrides, _FLAGS) for path in [args.study, *args.more]]
    studies = [open_study(cfg, create=False) for cfg in configs]
    if len(studies) == 1:
        # `kdnas fidelity` writes its results beside the study's own report; --out elsewhere still shows them.
        paths = write_report(studies[0], Path(args.out) if args.out else configs[0].report_dir,
                             fidelity_csv=configs[0].report_dir / "fidelity.csv")
    else:
        if not args.out:
            raise KdnasError("comparing several studies needs --out DIR")
        paths = compare(studies, Path(args.out))
    for p in paths:
        print(p)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from kdnas.export import export_trial, pick_trial
    from kdnas.study import open_study

    study = open_study(cfg, create=False)
    number = args.trial if args.trial is not None else pick_trial(study, args.pick).number
    out = export_trial(cfg, study, number, Path(args.out), force=args.force, formats=tuple(args.format or ()))
    print(f"exported trial {number} of {cfg.name!r} to {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from kdnas.fulltrain import train_bundle

    try:
        result = train_bundle(args.bundle, args.epochs, args.device, threads=args.threads, force=args.force)
    except KeyboardInterrupt:  # the last epoch's state is on disk (written atomically): one line, no traceback
        print("interrupted: run the same command again to continue after the last finished epoch", file=sys.stderr)
        return 130
    print(f"trained {args.bundle} for {result['epochs']} epochs: val {result['val_accuracy']:.2%}, "
          f"test {result['test_accuracy']:.2%}; weights in {Path(args.bundle) / 'weights_full.pt'}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from kdnas.bundle_files import deploy

    for path in deploy(Path(args.bundle), args.format):
        print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from kdnas.predict import predict_images, write_csv

    rows = predict_images(args.bundle, args.images, brief=args.brief)
    if args.out:
        write_csv(rows, Path(args.out))
    print(f"{len(rows)} predictions in {args.out}" if args.out else
          "\n".join(f"{r['path']}\t{r['class']}\t{r['probability']:.3f}" for r in rows))
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from kdnas.config import load_study
    from kdnas.fidelity import agreement, describe, run_fidelity

    cfg = load_study(args.study, {"storage": args.storage} if args.storage else None, _FLAGS)
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
    from kdnas.dashboard import serve
    from kdnas.study import open_study

    try:
        serve(cfg, open_study(cfg, create=False), args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three integers), got {text!r}") from None
    if min(c, h, w) < 1:
        raise argparse.ArgumentTypeError(f"every dimension must be >= 1, got {text!r}")
    return c, h, w


def cmd_space(args: argparse.Namespace) -> int:
    import json

    from kdnas.explore import open_space, sample_candidates, size_range

    space, target = open_space(args.file, args.input, args.classes)
    where = f"input {','.join(map(str, target.input_shape))}, {target.num_classes} classes"
    if args.action == "show":
        sizes = size_range(space, target)
        if args.json:
            print(json.dumps({"parameters": dict(space.describe()), "limits": vars(space.limits), "sizes": sizes}, indent=2))
            return 0
        print(f"search space {space.path} ({where})")
        for name, domain in space.describe():
            print(f"  {name:<40} {domain}")
        lim = {k: v for k, v in vars(space.limits).items() if v is not None}
        print(f"limits: {', '.join(f'{k}={v:,}' for k, v in lim.items()) or 'none'}")
        for family, r in sizes.items():
            if r["params"]:
                print(f"{family}: {r['params'][0]:,} .. {r['params'][1]:,} params, {r['macs'][0]:,} .. {r['macs'][1]:,} MACs "
                      f"over {r['corners']} domain corners ({r['corners_over_limits']} over the limits)")
        return 0
    rows = sample_candidates(space, target, args.n, args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} candidates from {space.path} ({where}, seed {args.seed})")
    for i, r in enumerate(rows):
        chain = " > ".join(f"{a['params']:,}" for a in r["chain"]["assistants"])
        print(f"{i:>3}  {r['params']:>10,} params {r['macs']:>13,} MACs  {r['label']}" + (f"  (assistants: {chain})" if chain else ""))
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other kdnas error (not the usage block)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from kdnas.costs._profile import check_setting, format_profile, load_arch, profile

    spec = load_arch(Path(args.arch))
    flags = {"device": args.device, "batch_size": args.batch_size, "threads": args.threads, "dtype": args.dtype,
             "min_seconds": args.min_seconds, "max_seconds": args.max_seconds}
    setting = None if args.no_latency else check_setting({k: v for k, v in flags.items() if v is not None}, "kdnas profile")
    table = None
    if args.estimate and setting is not None:
        from kdnas.costs import LatencyTable

        table = LatencyTable()
    result = profile(spec, args.input, args.classes, args.counter, setting, table,
                     say=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1) if args.json else format_profile(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kdnas", description="Search small, fast students by knowledge distillation.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("study", help="study file (YAML)")
        sp.set_defaults(func=func)
        return sp

    def add_bundle(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("bundle", help="a folder written by `kdnas export`")
        sp.set_defaults(func=func)
        return sp

    sp = add("search", cmd_search, "run (or resume) a study and write its report")
    sp.add_argument("--trials", type=int, help="trials to add in this run (default: search.trials)")
    sp.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    sp.add_argument("--storage", help="Optuna storage URL (default: SQLite in runs/<name>/ beside the study file)")
    sp.add_argument("--workers", type=int, help="worker processes on this machine (default: parallel.workers, 1)")
    sp.add_argument("--seed", type=int, help="sampler and training seed (default: the study's seed)")
    sp.add_argument("--device", help="training device: cpu, cuda, cuda:N")
    sp = add("report", cmd_report, "write a study's report (trials.csv, summary.md, report.html, plots); "
                                   "with several studies, overlay their fronts")
    sp.add_argument("more", nargs="*", metavar="STUDY", help="more study files to compare (needs --out)")
    sp.add_argument("--storage", help="Optuna storage URL")
    sp.add_argument("--out", help="output folder (default: reports/<name>/ beside the study file)")
    sp = add("export", cmd_export, "write a trial's student (spec, weights, recipe) as a bundle")
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number")
    which.add_argument("--pick", help="the most accurate Pareto trial within a budget, e.g. 'params<50000' or "
                                      "'latency_ms<0.5, macs<1e6'")
    sp.add_argument("--format", action="append", choices=["pt2", "onnx"],
                    help="also write a deployment file: pt2 (torch.export) or onnx; repeatable")
    sp.add_argument("--out", required=True, help="bundle folder to create")
    sp.add_argument("--force", action="store_true", help="replace the kdnas bundle at --out (never other files, "
                                                         "nor a bundle trained by `kdnas train`)")
    sp.add_argument("--storage", help="Optuna storage URL")
    add("validate", cmd_validate, "check a study file, its search space, its data and teacher checkpoint; "
                                   "train nothing")
    sp = add_bundle("train", cmd_train, "train an exported student (and its chain) fully; resumes if interrupted")
    sp.add_argument("--epochs", type=int, help="epochs for each stage (default: the bundle's full_train)")
    sp.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    sp.add_argument("--threads", type=int, help="torch threads (default: all cores); results repeat exactly only "
                                                "with the same thread count")
    sp.add_argument("--force", action="store_true", help="train a bundle already trained again, from scratch")
    sp = add_bundle("deploy", cmd_deploy, "(re)write a bundle's deployment files from the weights load_student uses")
    sp.add_argument("--format", action="append", choices=["pt2", "onnx"], required=True, help="pt2 or onnx; repeatable")
    sp = add_bundle("predict", cmd_predict, "print the class of each image (files, or folders of them) by a bundle's "
                                            "student, preprocessed as its preprocess.json says")
    sp.add_argument("images", nargs="+", help="image files, or folders of them")
    sp.add_argument("--out", help="write a CSV (path, class, index, probability) instead of printing")
    sp.add_argument("--brief", action="store_true", help="use the brief-trained weights even after `kdnas train`")
    sp = add("fidelity", cmd_fidelity, "retrain K completed trials with the full budget and measure how well brief "
                                       "training ranked them (Kendall tau, Spearman rho); resumes if interrupted")
    sp.add_argument("--top", type=int, required=True, metavar="K",
                    help="how many trials: the Pareto-optimal ones, then a spread of the others by brief val accuracy")
    sp.add_argument("--epochs", type=int, metavar="E",
                    help="epochs for each stage (default: the full recipe `kdnas export` suggests)")
    sp.add_argument("--threads", type=int, metavar="T", help="torch threads (default: the study's threads)")
    sp.add_argument("--device", metavar="D", help="training device: cpu, cuda, cuda:N (default: the study's device)")
    sp.add_argument("--seed", type=int, metavar="S", help="train each trial with the seed a search with study seed S "
                                                          "gives it (default: each trial's own seed)")
    sp.add_argument("--storage", help="Optuna storage URL")
    sp = add("dashboard", cmd_dashboard, "open optuna-dashboard on the study's storage")
    sp.add_argument("--storage", help="Optuna storage URL")
    sp.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    sp = sub.add_parser("space", help="inspect a search space before spending compute",
                        description="inspect a search space (or a study file's space) before spending compute")
    sp.add_argument("action", choices=["show", "sample"], help="show: domains and size range; sample: candidates")
    sp.add_argument("file", help="search space file, or a study file (then its dataset and teacher are used)")
    sp.add_argument("-n", type=int, default=10, help="sample: how many candidates (default 10)")
    sp.add_argument("--seed", type=int, default=0, help="sample: random seed (default 0)")
    sp.add_argument("--input", type=_shape, help="input shape C,H,W (default: the study's, else 3,32,32)")
    sp.add_argument("--classes", type=int, help="class count (default: the study's, else 10)")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(func=cmd_space)
    sp = sub.add_parser("profile", help="print params, MACs, FLOPs and latency of one architecture",
                        description="print params, MACs, FLOPs and latency of one architecture")
    sp.set_defaults(func=cmd_profile)
    sp.add_argument("arch", help="architecture file (YAML), e.g. {family: resnet_cifar, depth: 20}")
    sp.add_argument("--input", required=True, type=_shape, help="input shape C,H,W, e.g. 3,32,32")
    sp.add_argument("--classes", type=int, required=True, help="number of classes")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--counter", default="flop_counter", help="MAC counter: flop_counter (default), fvcore, thop")
    sp.add_argument("--device", help="latency device: cpu (default), cuda, cuda:N, mps")
    sp.add_argument("--batch-size", type=int, help="latency batch size (default 1)")
    sp.add_argument("--threads", type=int, help="latency threads (default 1)")
    sp.add_argument("--dtype", help="latency dtype: float32 (default), float16, bfloat16")
    sp.add_argument("--min-seconds", type=float, help="measure latency at least this long (default 0.3)")
    sp.add_argument("--max-seconds", type=float, default=10.0,
                    help="and at most this long (default 10, where a study's default is 3: this is the figure you ship)")
    sp.add_argument("--no-latency", action="store_true", help="count only; do not measure latency")
    sp.add_argument("--estimate", action="store_true", help="also estimate latency from the per-layer lookup table")
    return p


class _Stderr(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is at each message, not as it was when the handler was
    made: a caller that replaces it (a notebook, a test's capture, a redirect) gets kdnas's lines there, and
    a replaced stream that has since been closed is never written to."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging() -> None:
    import warnings

    log = logging.getLogger("kdnas")
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    import optuna

    # kdnas prints its own progress line per trial; Optuna's own INFO lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2, one line already printed)
        return int(exit_.code or 0)
    from kdnas import _malloc

    _malloc.tune()  # before any training: see kdnas/_malloc.py
    setup_logging()
    try:
        return args.func(args)
    except KdnasError as err:
        from kdnas.storage import scrub

        print(scrub(f"kdnas: error: {err}"), file=sys.stderr)
        return 2
    except Exception as err:
        if not type(err).__module__.startswith("sqlalchemy"):
            raise
        # The storage failed mid-run (server gone, disk full): say so in one line, without its password.
        from kdnas.storage import scrub

        lines = str(err).strip().splitlines()
        print(scrub(f"kdnas: error: storage failed: {lines[0] if lines else type(err).__name__}"), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
