"""Checks on a study's teacher that `kdnas validate` and `kdnas search` share: a checkpoint that loads into
teacher.arch (or one short line saying why not), and a warning for a teacher no better than chance."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from kdnas.config import StudyConfig
from kdnas.core import KdnasError, load_state_dict

# A teacher closer to chance than this share of the way to perfect accuracy teaches its students nothing.
CHANCE_MARGIN = 0.1
_NAMED = 3  # keys named per kind of mismatch; the rest are counted


def load_teacher_checkpoint(cfg: StudyConfig, model: torch.nn.Module, input_shape: tuple, num_classes: int,
                            name: str | None = None) -> Path:
    """Load the checkpoint of declared teacher ``name`` (None: the reference teacher) into ``model`` (its arch
    built for the study's data); return its path.

    Anything wrong is one KdnasError naming the study file and key: a file that is no checkpoint, one that
    holds Python objects (a whole pickled model), one whose keys or shapes are another network's."""
    t = cfg.teacher_set[name] if name is not None else next(iter(cfg.teacher_set.values()))
    assert t.config.checkpoint is not None
    path = cfg.resolve(t.config.checkpoint)
    where = f"{cfg.path}: {t.key}.checkpoint"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        raise KdnasError(f"{where}: cannot read {path}: {err.strerror or err}") from None
    # torch.save writes a zip archive (PK); PyTorch before 1.6 a pickle (protocol byte 0x80).
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise KdnasError(f"{where}: {path} is not a PyTorch checkpoint (a file written by torch.save); it begins "
                         f"{head!r}")
    try:
        state = load_state_dict(path)
    except KdnasError as err:
        hint = ("; a whole pickled model is not loaded (that would run its code): save its weights with "
                "torch.save(model.state_dict(), path)" if "Unsupported global" in str(err) else "")
        raise KdnasError(f"{where}: {err}{hint}") from None
    mismatch = _mismatch(model.state_dict(), state)
    if mismatch:
        raise KdnasError(f"{where}: {path} does not match {t.key}.arch {t.spec.label()} for input "
                         f"{tuple(input_shape)} and {num_classes} classes: {mismatch}")
    model.load_state_dict(state)
    return path


def _mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """What differs between two state_dicts, in a few names (PyTorch's own message lists every key)."""
    def some(names: list[str]) -> str:
        return ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} (file {tuple(found[k].shape)}, architecture {tuple(v.shape)})"
              for k, v in expected.items() if k in found and found[k].shape != v.shape]
    parts = [f"{len(names)} {what}: {some(names)}" for what, names in
             (("keys missing", missing), ("unexpected keys", unexpected), ("shapes differ", shapes)) if names]
    return "; ".join(parts)


def chance_warning(val_accuracy: float, num_classes: int) -> Optional[str]:
    """A warning line when the teacher's validation accuracy is near chance (1 / classes), else None."""
    chance = 1.0 / num_classes
    if val_accuracy > chance + CHANCE_MARGIN * (1.0 - chance):
        return None
    return (f"warning: the teacher's validation accuracy is {val_accuracy:.1%}, near chance ({chance:.1%} for "
            f"{num_classes} classes): its students learn nothing from it. Is teacher.checkpoint trained on this "
            f"data (same classes, same order), or teacher.train long enough?")
