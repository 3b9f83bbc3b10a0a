"""The `kdnas` command: one entry, a table of subcommands (kdnas/cli/_commands.py, _tools.py hold them)."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from kdnas.cli._commands import cmd_dashboard, cmd_export, cmd_fidelity, cmd_report, cmd_search, cmd_validate
from kdnas.cli._tools import cmd_deploy, cmd_predict, cmd_profile, cmd_space, cmd_train
from kdnas.core import KdnasError, setup_logging
from kdnas.train import PRECISIONS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other kdnas error (not the usage block)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three integers), got {text!r}") from None
    if min(c, h, w) < 1:
        raise argparse.ArgumentTypeError(f"every dimension must be >= 1, got {text!r}")
    return c, h, w


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
    sp.add_argument("--precision", choices=PRECISIONS,
                    help="training arithmetic (default: the study's precision, fp32); see docs/gpu.md")
    sp = add("report", cmd_report, "write a study's report (trials.csv, summary.md, report.html, plots); "
                                   "with several studies, overlay their fronts")
    sp.add_argument("more", nargs="*", metavar="STUDY", help="more study files to compare (needs --out)")
    sp.add_argument("--storage", help="Optuna storage URL")
    sp.add_argument("--out", help="output folder (default: reports/<name>/ beside the study file)")
    sp = add("export", cmd_export, "write a trial's student (spec, weights, recipe) as a bundle")
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number")
    which.add_argument("--pick", help="the front candidate with the highest mean val accuracy within a budget, e.g. "
                                      "'params<50000' or 'latency_ms<0.5, macs<1e6'; says which others are within noise")
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
    sp.add_argument("--precision", choices=PRECISIONS,
                    help="training arithmetic (default: the study's, from the bundle's recipe)")
    sp.add_argument("--force", action="store_true", help="train a bundle already trained again, from scratch")
    sp = add_bundle("deploy", cmd_deploy, "(re)write a bundle's deployment files from the weights load_student uses")
    sp.add_argument("--format", action="append", choices=["pt2", "onnx"], required=True, help="pt2 or onnx; repeatable")
    sp = add_bundle("predict", cmd_predict, "print the class of each image (files, or folders of them) by a bundle's "
                                            "student, preprocessed as its preprocess.json says")
    sp.add_argument("images", nargs="+", help="image files, or folders of them")
    sp.add_argument("--out", help="write a CSV (path, class, index, probability) instead of printing")
    sp.add_argument("--brief", action="store_true", help="use the brief-trained weights even after `kdnas train`")
    sp = add("fidelity", cmd_fidelity, "retrain K candidates with the full budget and measure how well brief "
                                       "training ranked them (Kendall tau, Spearman rho); resumes if interrupted")
    sp.add_argument("--top", type=int, required=True, metavar="K",
                    help="how many candidates: those on the front of means, then a spread of the others by mean "
                         "brief val accuracy")
    sp.add_argument("--epochs", type=int, metavar="E",
                    help="epochs for each stage (default: the full recipe `kdnas export` suggests)")
    sp.add_argument("--threads", type=int, metavar="T", help="torch threads (default: the study's threads)")
    sp.add_argument("--device", metavar="D", help="training device: cpu, cuda, cuda:N (default: the study's device)")
    sp.add_argument("--seed", type=int, metavar="S", help="train each trial with the seed a search with study seed S "
                                                          "gives it (default: each trial's own seed)")
    sp.add_argument("--seeds", type=int, metavar="N", help="1 (default) or 2: also train each candidate fully under "
                                                           "a second seed and report how the two full trainings agree "
                                                           "(the ceiling for brief vs full); doubles the cost")
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2, one line already printed)
        return int(exit_.code or 0)
    from kdnas.core import _malloc

    _malloc.tune()  # before any training: see kdnas/core/_malloc.py
    setup_logging()
    try:
        return args.func(args)
    except KdnasError as err:
        from kdnas.study import scrub

        print(scrub(f"kdnas: error: {err}"), file=sys.stderr)
        return 2
    except Exception as err:
        if not type(err).__module__.startswith("sqlalchemy"):
            raise
        # The storage failed mid-run (server gone, disk full): say so in one line, without its password.
        from kdnas.study import scrub

        lines = str(err).strip().splitlines()
        print(scrub(f"kdnas: error: storage failed: {lines[0] if lines else type(err).__name__}"), file=sys.stderr)
        return 1
