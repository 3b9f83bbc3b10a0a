"""The Optuna objective and the study runner."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import optuna
import torch

from kdnas.artifacts import ArtifactStore
from kdnas.config import StudyConfig
from kdnas.costs import LatencyCache, count
from kdnas.data import DataSplit, load_split
from kdnas.distill import METHODS
from kdnas.errors import KdnasError, TrialFailure
from kdnas.models import KDNet, build, digest
from kdnas.score import DIRECTIONS, METRIC_NAMES, combined_score, constraints, feasible, measured_front
from kdnas.space import Candidate
from kdnas.storage import mask_url, open_storage
from kdnas.teacher import get_teacher
from kdnas.train import accuracy, fit, predict

log = logging.getLogger("kdnas")



def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdnasError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise KdnasError("device 'mps' was asked for, but MPS is not available on this machine")
    return torch.device(name)


@dataclass
class Runtime:
    """Everything the objective needs, prepared once per `kdnas search` process."""

    cfg: StudyConfig
    split: DataSplit  # on the training device
    device: torch.device
    store: ArtifactStore
    latency: LatencyCache
    teacher: KDNet
    teacher_info: dict
    teacher_train_logits: torch.Tensor  # teacher outputs on the training split, computed once


def prepare(cfg: StudyConfig) -> Runtime:
    device = resolve_device(cfg.device)
    resolve_device(cfg.costs.latency.device)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    split = load_split(cfg.data.dataset, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed).to(device)
    store = ArtifactStore(cfg.run_dir / "artifacts")
    latency = LatencyCache(cfg.run_dir / "latency_cache.json")
    teacher, info = get_teacher(cfg, split, store, device)
    assert cfg.teacher_spec is not None
    counts = count(cfg.teacher_spec, split.input_shape, split.num_classes, cfg.costs.counter)
    info.update(params=counts.params, macs=counts.macs)
    info.update(latency.get_or_measure(cfg.teacher_spec, split.input_shape, split.num_classes, cfg.costs.latency))
    # The training split is used without random augmentation, so the teacher's outputs on it are fixed:
    # computing them once replaces a teacher forward pass in every step of every trial.
    logits = predict(teacher, split.train_x)
    return Runtime(cfg, split, device, store, latency, teacher, info, logits)


def trial_seed(study_seed: int, number: int) -> int:
    return int(digest([study_seed, number], 8), 16) % (2**31)


def run_trial(rt: Runtime, trial: optuna.Trial) -> tuple[float, ...]:
    cfg, split = rt.cfg, rt.split
    t0 = time.perf_counter()
    cand: Candidate = cfg.space.sample(trial)
    trial.set_user_attr("candidate", cand.to_dict())
    trial.set_user_attr("student", cand.student.label())
    trial.set_user_attr("method", cand.method.label())
    counts = count(cand.student, split.input_shape, split.num_classes, cfg.costs.counter)
    trial.set_user_attr("params", counts.params)
    trial.set_user_attr("macs", counts.macs)
    # Latency does not depend on the weights: measured before training, so a hard limit costs no training.
    lat = rt.latency.get_or_measure(cand.student, split.input_shape, split.num_classes, cfg.costs.latency)
    for key, value in lat.items():
        trial.set_user_attr(key, value)
    costs = {"params": counts.params, "macs": counts.macs, "latency_ms": lat["latency_ms"]}
    violated = {}
    for key, value in constraints(costs, cfg.score.limits).items():
        trial.set_constraint(key, value)
        if value > 0:
            violated[key] = value
    if violated:
        reason = "; ".join(f"over score.limits.{k}: {costs[k.removeprefix('max_')]:.4g} > "
                           f"{getattr(cfg.score.limits, k):.4g}" for k in violated)
        trial.set_user_attr("prune_reason", reason)
        raise optuna.TrialPruned(reason)

    seed = trial_seed(cfg.seed, trial.number)
    trial.set_user_attr("seed", seed)
    torch.manual_seed(seed)
    model = build(cand.student, split.input_shape, split.num_classes).to(rt.device)
    method = METHODS.get(cand.method.name)
    hp = cand.method.hyperparameters
    tl = rt.teacher_train_logits

    def loss_fn(logits, batch):
        return method.loss(logits, tl[batch.idx] if method.uses_teacher else None, batch.y, **hp)

    t_train = time.perf_counter()
    history = fit(model, split.train_x, split.train_y, cfg.student.train, loss_fn, seed)
    train_s = time.perf_counter() - t_train
    val_acc = accuracy(model, split.val_x, split.val_y)
    test_acc = accuracy(model, split.test_x, split.test_y)
    weights = rt.store.put_content("students", model.state_dict())
    trial.set_user_attr("teacher", rt.teacher_info.get("cache_key") or rt.teacher_info.get("checkpoint"))
    trial.set_user_attr("weights", weights)
    trial.set_user_attr("val_accuracy", val_acc)
    trial.set_user_attr("test_accuracy", test_acc)
    trial.set_user_attr("loss_history", history)
    trial.set_user_attr("train_seconds", train_s)
    trial.set_user_attr("trial_seconds", time.perf_counter() - t0)
    score = combined_score(val_acc, costs, cfg.score)
    trial.set_user_attr("score", score)
    if cfg.score.mode == "score":
        return (score,)
    values = {"accuracy": val_acc, "params": counts.params, "macs": counts.macs, "latency": lat["latency_ms"]}
    return tuple(float(values[o]) for o in cfg.objectives)


def make_objective(rt: Runtime) -> Callable[[optuna.Trial], tuple[float, ...]]:
    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        try:
            return run_trial(rt, trial)
        except TrialFailure as err:
            reason = err.reason
        except torch.OutOfMemoryError:
            reason = "out of memory"
        except (RuntimeError, ValueError) as err:  # e.g. a candidate too deep for the input size
            lines = str(err).strip().splitlines()
            reason = f"{type(err).__name__}: {lines[0] if lines else ''}"
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailure(reason)

    return objective


def open_study(cfg: StudyConfig, create: bool) -> optuna.Study:
    """Open the study in its storage; with ``create``, create it (or resume it when it exists)."""
    storage = open_storage(cfg, create=create)
    score_mode = cfg.score.mode == "score"
    directions = ["maximize"] if score_mode else [DIRECTIONS[o] for o in cfg.objectives]
    if not create:
        try:
            return optuna.load_study(study_name=cfg.name, storage=storage)
        except KeyError:
            raise KdnasError(f"no study named {cfg.name!r} in {mask_url(cfg.storage_url())}; run `kdnas search` first") from None
    study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions, load_if_exists=True)
    stored_mode = study.user_attrs.get("score_mode", cfg.score.mode)
    if [d.name.lower() for d in study.directions] != directions or stored_mode != cfg.score.mode:
        raise KdnasError(
            f"{cfg.path}: objectives: the study {cfg.name!r} in storage was created with "
            f"{study.user_attrs.get('objectives')} ({[d.name.lower() for d in study.directions]}, score.mode "
            f"{stored_mode}), but the study file asks for {cfg.objectives} (score.mode {cfg.score.mode}); "
            f"use a new study name"
        )
    study.set_metric_names(["score"] if score_mode else [METRIC_NAMES[o] for o in cfg.objectives])
    study.set_user_attr("objectives", list(cfg.objectives))  # in score mode too: the report's front and hypervolume
    study.set_user_attr("score_mode", cfg.score.mode)
    return study


def make_sampler(cfg: StudyConfig, n_existing: int) -> optuna.samplers.BaseSampler:
    # Offset the seed by the trials already stored: a resumed run with the same seed would otherwise replay
    # the first run's random start-up samples and train the same candidates again.
    seed = cfg.seed + n_existing
    if cfg.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed, feasible trials on the Pareto front of the measured objectives (in score mode too)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE and feasible(t)]
    if not done:
        return []
    mask = measured_front([t.user_attrs for t in done], study.user_attrs["objectives"])
    return [t for t, m in zip(done, mask) if m]


def _print(line: str) -> None:
    print(line, flush=True)  # progress must show up live even when stdout is a file or a pipe


def search(cfg: StudyConfig, progress: Callable[[str], None] = _print) -> optuna.Study:
    """Run ``cfg.search.trials`` more trials (or until the timeout) and return the study."""
    t0 = time.perf_counter()
    # The teacher comes first: a checkpoint that does not load must stop us before a study is created.
    rt = prepare(cfg)
    study = open_study(cfg, create=True)
    n_before = len(study.trials)
    if n_before:
        progress(f"resuming study {cfg.name!r}: {n_before} trials stored in {mask_url(cfg.storage_url())}")
    else:
        progress(f"new study {cfg.name!r} in {mask_url(cfg.storage_url())}")
    ti = rt.teacher_info
    progress(
        f"teacher {cfg.teacher_spec.label()}: {ti['params']:,} params, val acc {ti['val_accuracy']:.1%}, "
        f"{'trained in' if ti['trained_now'] else 'loaded in'} {ti['seconds']:.1f}s"
    )
    study.set_user_attr("teacher", ti)
    study.set_user_attr("data", {"dataset": cfg.data.dataset, **rt.split.sizes(), "fingerprint": rt.split.fingerprint,
                                 "input_shape": list(rt.split.input_shape), "num_classes": rt.split.num_classes})
    study.sampler = make_sampler(cfg, n_before)
    n_new = cfg.search.trials

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.trials) - n_before
        elapsed = time.perf_counter() - t0
        head = f"[{done:>3}/{n_new} {elapsed:6.1f}s] trial {trial.number:>3}"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            ua = trial.user_attrs
            front = front_trials(study)
            best = max(t.user_attrs["val_accuracy"] for t in front)
            progress(f"{head} val {ua['val_accuracy']:6.1%}  {ua['params']:>9,} params  {ua['latency_ms']:7.3f} ms  "
                     f"{ua['student']} {ua['method']}  ({ua['trial_seconds']:.1f}s) | front {len(front)}, best val {best:.1%}")
        else:
            reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("prune_reason", "")
            progress(f"{head} {trial.state.name}: {reason}")

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress lines replace Optuna's per-trial logs
    study.optimize(make_objective(rt), n_trials=n_new, timeout=cfg.search.timeout,
                   catch=(TrialFailure,), callbacks=[on_trial], gc_after_trial=False)
    return study
