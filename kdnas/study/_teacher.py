"""The teacher: trained on first use and cached by content, or loaded from a checkpoint."""

from __future__ import annotations

import hashlib
import logging
import time

import torch
import torch.nn.functional as F

from kdnas.config import SINGLE, DeclaredTeacher, StudyConfig
from kdnas.core import ArtifactStore, KdnasError, TrialFailure
from kdnas.data import DataSplit
from kdnas.models import KDNet, build, digest
from kdnas.study._teacher_checks import chance_warning, load_teacher_checkpoint
from kdnas.train import Resumable, accuracy, fit, resolve_precision

log = logging.getLogger("kdnas")

CACHE_FORMAT = 1  # bump when training code changes in a way that makes cached teachers stale


def teacher_key(cfg: StudyConfig, split: DataSplit, name: str | None = None, precision: str = "fp32") -> str:
    """Hash of everything that determines the trained teacher: spec, data split, recipe, seed, format, and the
    precision it trains in (resolved; only when not fp32, so teachers trained before it existed keep their keys).
    Not its name: two studies (or two names) declaring the same teacher share its training."""
    t = declared(cfg, name)
    return digest(
        {
            "format": CACHE_FORMAT,
            "spec": t.spec.to_dict(),
            "data": split.fingerprint,
            "recipe": t.config.train.to_dict(),
            "seed": t.config.seed,
            **({"precision": precision} if precision != "fp32" else {}),
        }
    )


def declared(cfg: StudyConfig, name: str | None) -> DeclaredTeacher:
    """The declared teacher ``name``; None: the reference teacher (the first declared)."""
    return cfg.teacher_set[name] if name is not None else next(iter(cfg.teacher_set.values()))


def get_teacher(cfg: StudyConfig, split: DataSplit, store: ArtifactStore, device: torch.device,
                name: str | None = None) -> tuple[KDNet, dict]:
    """Return the declared teacher ``name`` (None: the reference teacher) in eval mode on ``device`` and a
    JSON-able description of it.

    The description holds its spec, identity (``cache_key``, or ``checkpoint`` and ``checkpoint_sha256``),
    val/test accuracy and how long it took to obtain.
    """
    t = declared(cfg, name)
    t0 = time.perf_counter()
    torch.manual_seed(t.config.seed)  # before build: the initial weights are part of what the seed fixes
    model = build(t.spec, split.input_shape, split.num_classes)
    if t.config.checkpoint is not None:
        path = load_teacher_checkpoint(cfg, model, split.input_shape, split.num_classes, t.name)
        # The file's content, not its path, identifies the teacher for caches of its outputs.
        source = {"checkpoint": str(path), "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
        trained = False
    else:
        precision = resolve_precision(cfg.precision, device)
        key = teacher_key(cfg, split, t.name, precision)
        source = {"cache_key": key}
        shown = t.spec.label() if t.name == SINGLE else f"{t.name} ({t.spec.label()})"
        # Held while it trains: `kdnas search` processes started together (on this machine, or on every machine
        # of a study with a shared store) train it once; the others wait, then load it.
        with store.once(f"teacher-{key}", f"teacher {shown}"):
            trained = not store.has("teachers", key)
            if not trained:
                model.load_state_dict(store.get_state_dict("teachers", key))
            else:
                model.to(device)
                # After every epoch: a partial checkpoint (in an S3 store too), read back only here, under this lock or
                # claim: after Ctrl-C, or by the machine that takes a dead holder's claim over.
                run = Resumable(store.partial("teachers", key), f"teacher {shown}",
                                t.config.train.epochs)
                try:
                    fit(model, split.train, t.config.train, lambda logits, batch: F.cross_entropy(logits, batch.y),
                        t.config.seed, checkpoint=run.checkpoint, resume=run.resume, precision=precision)
                except TrialFailure as err:
                    raise KdnasError(f"{cfg.path}: {t.key}.train: teacher training failed: {err.reason}") from None
                store.put_state_dict("teachers", key, model.state_dict())
                run.finished()
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info = {
        "name": t.name,
        "spec": t.spec.to_dict(),
        **source,
        "trained_now": trained,
        **evaluation(model, source, split, store),
        "seconds": time.perf_counter() - t0,
    }
    warning = chance_warning(info["val_accuracy"], split.num_classes)
    if warning:
        log.warning(warning)
    return model, info


def evaluation(model: KDNet, source: dict, split: DataSplit, store: ArtifactStore) -> dict:
    """The teacher's val and test accuracy, computed once per teacher and split: every later command, and
    every worker of ``--workers N``, reads them back."""
    key = digest([source.get("cache_key") or source["checkpoint_sha256"], split.fingerprint])
    try:
        scores = store.get_json("teacher_eval", key)
        if set(scores) == {"val_accuracy", "test_accuracy"}:
            return scores
    except (OSError, ValueError):
        pass  # not computed yet, or damaged: computing it again costs seconds
    scores = {"val_accuracy": accuracy(model, split.val), "test_accuracy": accuracy(model, split.test)}
    store.put_json("teacher_eval", key, scores)
    return scores
