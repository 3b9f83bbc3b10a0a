"""A frozen network's logits on each training batch: computed once per study where the inputs allow it.

Without random augmentation, the teacher (or an assistant) sees the same input for a sample in every step of
every trial, so its logits on the training split are a fixed table: computed once, stored in the run
folder's artifact store under a key of the network's identity and the data split, and read back by every
trial, worker and later ``kdnas search``. A step then costs a table lookup instead of a teacher forward pass.

With random augmentation the input differs per step, and soft targets computed on the un-augmented image
would teach the student the wrong answer for the crop it sees. So the teacher runs on the very batch the
student sees (``batch.x``), under ``no_grad``, in eval mode.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from kdnas.core import ArtifactStore
from kdnas.data import DataSplit
from kdnas.models import digest
from kdnas.train import Batch, fast_memory_format, predict

log = logging.getLogger("kdnas")

LOGITS_FORMAT = 1  # bump when the way logits are computed changes, so stored tables are not reused
KIND = "teacher_logits"


class TeacherLogits:
    """``logits(batch)``: the frozen network's logits for a training batch, shape (B, classes)."""

    def __init__(self, model: nn.Module, table: torch.Tensor | None = None):
        self.model = model
        self.table = table  # logits per training sample, indexed by Batch.idx; None = run the model per batch
        if table is None:  # it runs on every batch, which fit hands over in this layout
            device = next(model.parameters()).device
            model.to(memory_format=fast_memory_format(device))

    @property
    def cached(self) -> bool:
        return self.table is not None

    def __call__(self, batch: Batch) -> torch.Tensor:
        if self.table is not None:
            return self.table[batch.idx]
        with torch.no_grad():  # not inference_mode: the result is saved for the student's backward pass
            return self.model(batch.x)


def logits_key(model_key: str, split: DataSplit) -> str:
    return digest({"format": LOGITS_FORMAT, "model": model_key, "data": split.fingerprint})


def teacher_logits(model: nn.Module, model_key: str, split: DataSplit, store: ArtifactStore,
                   random_augment: bool) -> TeacherLogits:
    """The logits provider for ``model`` (frozen, eval mode), identified by ``model_key``.

    ``random_augment`` says whether the student's training inputs are randomly augmented; without it the
    table is loaded from ``store`` or computed and stored there.
    """
    if random_augment:
        return TeacherLogits(model)
    key = logits_key(model_key, split)
    expected = (len(split.train), split.num_classes)
    # With a shared store one machine computes the table and the others wait for it; on one machine two processes
    # computing it at once cost seconds, not a lock.
    with store.once(f"logits-{key}", f"outputs of {model_key} on the training split", locally=False):
        if store.has(KIND, key):
            table = store.get_state_dict(KIND, key).get("logits")
            if table is not None and tuple(table.shape) == expected:
                return TeacherLogits(model, table.to(split.train.device))
            log.warning("stored teacher logits %s do not match the split; computing them again", key)
        table = predict(model, split.train)
        store.put_state_dict(KIND, key, {"logits": table})
    return TeacherLogits(model, table)
