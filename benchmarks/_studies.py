"""Helpers shared by the study-level benchmarks (caches.py, overhead.py, early_stopping.py, workers_vs_threads.py).

Each benchmark runs real `kdnas search` commands on study files derived from the shipped ones: the shipped
file is read with ``yaml.safe_load``, keys are overridden, and the result is written into a temporary
folder, with the paths it names (search space, data root, teacher checkpoint) made absolute so that they
still point at the repository. Every side's study file lies in a folder of its own (kdnas writes
``runs/<name>/`` and ``reports/<name>/`` beside the study file), so nothing in the repository is touched.
"""

from __future__ import annotations

import contextlib
import copy
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent  # the repository
STUDIES = ROOT / "studies"


@contextlib.contextmanager
def work_folder(keep: str | None, prefix: str) -> Iterator[Path]:
    """Where a benchmark's studies run: ``keep`` (absolute, kept) or a temporary folder removed at the end."""
    folder = Path(keep).resolve() if keep else Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged into it, section by section (a value of None deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def best_of_alternating(reference: Callable[[], object], ours: Callable[[], object],
                        repeats: int) -> tuple[float, float]:
    """The best wall-clock seconds of ``reference()`` and of ``ours()``, called in turn ``repeats`` times each,
    so that both see the same machine."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in zip((reference, ours), times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return min(times[0]), min(times[1])


# What ``--smoke`` changes in any study: digits (8x8: even the shipped ResNet-20 teacher trains an epoch in about
# a second, and it stays larger than every assistant), one epoch everywhere, brief latency measurements, one
# thread (two threads' workers spin against each other on a busy 2-core machine: seconds per step). Every
# benchmark's smoke run is in the default test suite (tests/test_benchmarks.py), so it must take seconds; it
# checks that the script still runs against today's kdnas, and its figures mean nothing.
SMOKE = {
    "threads": 1,
    "data": {"dataset": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "root": None},
    "teacher": {"train": {"epochs": 1}, "checkpoint": None},
    "student": {"train": {"epochs": 1}},
    # In the study's process: a latency child is one more interpreter to start per command, for nothing here.
    "costs": {"latency": {"min_seconds": 0.05, "max_seconds": 0.3, "background": False}},
}


def derive(src: str | Path, dest: Path, overrides: dict[str, Any], smoke: bool = False) -> Path:
    """Write ``src`` with ``overrides`` merged in (and :data:`SMOKE` after them, with ``smoke``) as
    ``dest/<name>.yaml``; return its path."""
    src = Path(src)
    if not src.is_file() and (STUDIES / src).is_file():
        src = STUDIES / src
    raw = yaml.safe_load(src.read_text())
    raw = merge(raw, overrides)
    if smoke:
        several = isinstance(raw.get("teachers"), dict)
        raw = merge(raw, SMOKE)
        if several:  # a study of several teachers: each gets what SMOKE gives the one teacher
            each = raw.pop("teacher")
            raw["teachers"] = {n: merge(t, each) for n, t in raw["teachers"].items()}
        for t in raw["teachers"].values() if several else [raw["teacher"]]:
            arch = t.get("arch") or {}
            if arch.get("family") == "resnet_cifar" and int(arch.get("depth", 8)) > 8:
                # A smoke run checks the code path: a ResNet-8 teacher (still above every shipped assistant's and
                # most students' size) costs a third of the shipped studies' ResNet-20 per epoch.
                t["arch"] = {**arch, "depth": 8}
        if isinstance(raw.get("assistants"), dict):
            raw = merge(raw, {"assistants": {"train": {"epochs": 1}}})

    def absolute(rel: str) -> str:
        p = Path(rel).expanduser()
        return str(p if p.is_absolute() else (src.parent / p).resolve())

    raw["search"]["space"] = absolute(raw["search"]["space"])
    if isinstance(raw.get("data"), dict) and raw["data"].get("root"):
        raw["data"]["root"] = absolute(raw["data"]["root"])
    for t in [raw.get("teacher"), *(raw.get("teachers") or {}).values()]:
        if isinstance(t, dict) and t.get("checkpoint"):
            t["checkpoint"] = absolute(t["checkpoint"])
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def child_env() -> dict[str, str]:
    """The environment for a child process: kdnas importable from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def kdnas_search(study: Path, cwd: Path, args: list[str], log: Path | None = None,
                 python: list[str] | None = None, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run `python -m kdnas.cli search STUDY ARGS` in ``cwd`` (output appended to ``log``); return its wall
    seconds and its CPU seconds (user + system, the process and its children). With one torch thread the
    CPU time is the work done, which other processes on a shared machine change much less; the wall time
    is what a user waits for. ``python`` replaces ``[sys.executable, "-m", "kdnas.cli"]`` (a wrapper that
    patches first); ``env`` replaces :func:`child_env`."""
    cmd = [*(python or [sys.executable, "-m", "kdnas.cli"]), "search", str(study), *args]
    out = open(log, "a") if log else subprocess.DEVNULL
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=cwd, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    finally:
        if log:
            out.close()
    if rc != 0:  # the log's folder may be a temporary one, removed on the way out: its tail goes with the message
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-25:]) if log else ""
        sys.exit(f"`{' '.join(cmd)}` in {cwd} exited with {rc}" + (f"; the end of {log}:\n{tail}" if log else ""))
    return wall, cpu


def pretrain_teacher(study: Path, tmp: Path, dests: list[Path]) -> float:
    """Train the study's teacher once (in a child process, on a copy of ``study`` in ``tmp/teacher``) and copy it
    into the run folder beside the study file in each of ``dests`` (the sides' folders), so that every side
    starts with it cached; return the training seconds."""
    folder = tmp / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copy(study, folder))  # its run folder lands beside it, in `folder`
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "teacher", str(copy)], cwd=folder,
                         env=child_env(), capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"training the teacher of {study} failed:\n{out.stderr}")
    seconds = float(out.stdout.strip().splitlines()[-1])
    name = Path(study).stem
    for d in dests:
        shutil.copytree(folder / "runs" / name / "artifacts" / "teachers", d / "runs" / name / "artifacts" / "teachers",
                        dirs_exist_ok=True)
    return seconds


def _train_teacher(study: str) -> None:
    """Child process: train (or load) the study's teacher into runs/<name>/artifacts here; print seconds."""
    import torch

    from kdnas.core import ArtifactStore
    from kdnas.config import load_study
    from kdnas.data import load_split
    from kdnas.costs import resolve_device
    from kdnas.study import get_teacher

    cfg = load_study(study)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    device = resolve_device(cfg.device)
    split = load_split(cfg.data, device, cfg.path)
    _, info = get_teacher(cfg, split, ArtifactStore(cfg.run_dir / "artifacts"), device)
    print(info["seconds"])


def trials(cwd: Path, study: Path, storage: str | None = None):
    """The stored trials of ``study`` (its run folder is beside it; read through kdnas, as `kdnas report`
    does, from ``cwd``), or of the study in ``storage``."""
    import warnings

    study = Path(study).resolve()
    prev = os.getcwd()
    os.chdir(cwd)
    try:
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings on opening the storage
        from kdnas.config import load_study
        from kdnas.study import open_study

        return open_study(load_study(study, {"storage": storage} if storage else None), create=False).get_trials(deepcopy=False)
    finally:
        os.chdir(prev)


def machine() -> str:
    """A one-line description of this machine, for the figures."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {model}, load {load:.1f}"


# Students of search_spaces/mixed_families.yaml (the mnist5k study) that its runs trained, one to three per family.
MNIST5K_STUDENTS = [
    {"family": "mobilenetv2", "blocks": [1, 1, 1], "expansion": 4, "kernel_size": 5, "width": 1.0},
    {"family": "mobilenetv2", "blocks": [1, 1, 1], "expansion": 4, "kernel_size": 5, "width": 0.5},
    {"family": "mobilenetv2", "blocks": [1, 2, 2, 2], "expansion": 4, "kernel_size": 3, "width": 0.25},
    {"family": "resnet_cifar", "depth": 14, "width": 0.75},
    {"family": "plain_cnn", "channels": [16, 16, 32, 32], "hidden": 0, "kernel_size": 5, "pool_every": 2},
]
# What the latency benchmarks measure after a training burst: the above and a deeper, narrow ResNet.
LATENCY_STUDENTS = MNIST5K_STUDENTS + [{"family": "resnet_cifar", "depth": 20, "width": 0.25}]
MNIST_SHAPE = (1, 28, 28)


def train_for(arch: dict, seconds: float) -> None:
    """Train ``arch`` on random MNIST-sized batches of 128 for ``seconds``, with the threads set now: the
    burst of training a study runs before it measures a candidate's latency."""
    import torch
    import torch.nn.functional as F

    from kdnas.models import build, make_spec

    model = build(make_spec(arch), MNIST_SHAPE, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, *MNIST_SHAPE), torch.randint(0, 10, (128,))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


if __name__ == "__main__" and sys.argv[1:2] == ["teacher"]:
    _train_teacher(sys.argv[2])
