"""Teacher-assistant chains: TAKD (Mirzadeh et al. 2020) and DGKD (Son et al. 2021).

A chain is teacher > assistant_1 > ... > assistant_k > student, ordered by capacity. In ``takd`` mode each
learner distils from the network just above it; in ``dgkd`` mode from all networks above it, and in every
batch each of those guides is dropped with probability ``drop_rate`` (at least one is kept), the stochastic
variant Son et al. use against overfitting to any one guide. With several guides the distillation term is the
mean of the per-guide terms, so the method's weighting convention (see :mod:`kdnas.distill.losses`) holds
for any number of guides.

Assistants are trained once and stored by content: their key hashes their spec, the keys of the guides
they learnt from (so the key of an assistant covers its whole chain prefix), the assistant recipe, the data
split and the seed. Every later trial and every worker sharing the run folder loads them instead. A file
lock makes concurrent workers that need the same assistant train it once; under it, an assistant whose
training was interrupted continues after its last finished epoch (:mod:`kdnas.train._resumable`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from kdnas.core import ArtifactStore
from kdnas.data import BatchSource, DataSplit
from kdnas.distill._ensemble import Ensemble, ensemble_logits
from kdnas.distill._loss import make_loss
from kdnas.distill._methods import METHODS
from kdnas.distill._spec import Chain, MethodSpec
from kdnas.distill._teacher_logits import teacher_logits
from kdnas.models import ArchSpec, KDNet, build, digest
from kdnas.train import Batch, LossFn, Resumable, TrainRecipe, accuracy, fit

log = logging.getLogger("kdnas")

ASSISTANT_FORMAT = 1  # bump when assistant training changes in a way that makes stored assistants stale


@dataclass
class Guide:
    """A trained, frozen network that teaches: the teacher or an assistant."""

    name: str
    key: str  # content identity, used in the keys of the assistants that learn from it
    model: KDNet
    logits: Callable[[Batch], torch.Tensor]  # its logits per training batch (a per-study table where possible)
    info: dict[str, Any]
    members: tuple["Guide", ...] = ()  # a teacher ensemble's members (kdnas/distill/_ensemble.py); () otherwise


def ensemble_guide(name: str, key: str, members: list[Guide], info: dict[str, Any]) -> Guide:
    """One guide of several frozen members: its ``logits`` are those of the mean of their probabilities (T = 1);
    a distillation loss reads the members at its own temperature (:func:`guided_loss`)."""
    model = Ensemble([g.model for g in members]).eval()
    return Guide(name, key, model, lambda batch: ensemble_logits([g.logits(batch) for g in members]), info,
                 tuple(members))


@contextlib.contextmanager
def _guide_loss(method: MethodSpec, student: nn.Module, g: Guide, train: BatchSource
                ) -> Iterator[tuple[LossFn, nn.Module | None]]:
    """``make_loss`` for one guide; an ensemble's as its module docstring (kdnas/distill/_ensemble.py) says."""
    if not g.members:
        with make_loss(method, student, g.model, train, teacher_logits=g.logits) as out:
            yield out
        return
    m = METHODS.get(method.name)
    if m.reads == "logits":  # the mean of the members' probabilities at the method's own temperature
        t = float(m.resolve(method.hyperparameters).get("temperature", 1.0))
        with make_loss(method, student, g.model, train,
                       teacher_logits=lambda batch: ensemble_logits([x.logits(batch) for x in g.members], t)) as out:
            yield out
        return
    with contextlib.ExitStack() as stack:  # features: each member's term with its own adapter, averaged
        parts = [stack.enter_context(make_loss(method, student, x.model, train, teacher_logits=x.logits))
                 for x in g.members]
        found = [a for _, a in parts if a is not None]

        def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            return torch.stack([fn(logits, batch) for fn, _ in parts]).mean()

        yield loss_fn, (nn.ModuleList(found) if found else None)


@contextlib.contextmanager
def guided_loss(method: MethodSpec, student: nn.Module, guides: list[Guide], train: BatchSource,
                drop_rate: float, seed: int, drops: torch.Generator | None = None
                ) -> Iterator[tuple[LossFn, nn.Module | None]]:
    """The loss of ``student`` taught by ``guides`` with ``method``: one :func:`kdnas.distill.make_loss` per
    guide (each with its own cached logits, hooks and adapters), averaged over the guides kept in a batch.

    Each per-guide loss is ``(1 - alpha) CE + alpha D_g``, so their mean is ``(1 - alpha) CE + alpha mean(D_g)``.
    Yields ``(loss_fn, adapters)`` like ``make_loss``; a label-only method ignores the guides. The drops are
    drawn from ``drops`` when given (a caller that checkpoints the run saves its state), else from a
    generator seeded with ``seed``.
    """
    gen = drops if drops is not None else torch.Generator().manual_seed(seed)
    with contextlib.ExitStack() as stack:
        if not METHODS.get(method.name).uses_teacher:
            yield stack.enter_context(make_loss(method, student, None, train))
            return
        kds = [stack.enter_context(_guide_loss(method, student, g, train)) for g in guides]
        found = [a for _, a in kds if a is not None]
        adapters = nn.ModuleList(found) if found else None

        def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            kept = kds
            if len(kds) > 1 and drop_rate > 0:
                keep = torch.rand(len(kds), generator=gen) >= drop_rate
                if not keep.any():
                    keep[torch.randint(len(kds), (1,), generator=gen)] = True
                kept = [kd for kd, k in zip(kds, keep.tolist()) if k]
            losses = [fn(logits, batch) for fn, _ in kept]
            return losses[0] if len(losses) == 1 else torch.stack(losses).mean()

        yield loss_fn, adapters


class AssistantPool:
    """Gets each assistant of a chain: from memory, from the store, or by training it (once)."""

    def __init__(self, split: DataSplit, store: ArtifactStore, device: torch.device, recipe: TrainRecipe,
                 method: MethodSpec, drop_rate: float, seed: int, random_augment: bool = False, precision: str = "fp32"):
        self.split, self.store, self.device, self.random_augment = split, store, device, random_augment
        self.precision = precision  # resolved (kdnas/train/_precision.py)
        self.recipe, self.method, self.drop_rate, self.seed = recipe, method, drop_rate, seed
        self._guides: dict[str, Guide] = {}

    def key(self, spec: ArchSpec, parents: list[Guide]) -> str:
        return digest({
            "format": ASSISTANT_FORMAT,
            "spec": spec.to_dict(),
            "guides": [g.key for g in parents],
            "recipe": self.recipe.to_dict(),
            "method": self.method.to_dict(),
            "drop_rate": self.drop_rate if len(parents) > 1 else None,  # irrelevant with one guide
            "data": self.split.fingerprint,
            "seed": self.seed,
            # Only when not fp32: assistants trained before precision existed keep their keys.
            **({"precision": self.precision} if self.precision != "fp32" else {}),
        })

    def chain(self, teacher: Guide, chain: Chain, trial_number: int | None = None) -> tuple[list[Guide], list[dict]]:
        """Guides of the student for ``chain`` (ordered largest first) and one record per assistant."""
        above = [teacher]
        records = []
        for spec in chain.assistants:
            parents = above if chain.mode == "dgkd" else [above[-1]]
            guide, trained_now = self.get(spec, parents, trial_number)
            records.append({"spec": spec.to_dict(), "key": guide.key, "trained_now": trained_now,
                            "guides": [g.key for g in parents], **{k: guide.info[k] for k in ("val_accuracy", "seconds")}})
            above.append(guide)
        return (above if chain.mode == "dgkd" else [above[-1]]), records

    def get(self, spec: ArchSpec, parents: list[Guide], trial_number: int | None = None) -> tuple[Guide, bool]:
        key = self.key(spec, parents)
        if key in self._guides:
            return self._guides[key], False
        trained_now = False
        # Trained by one process of this machine, or of the study's machines with a shared store; the others wait.
        with self.store.once(key, f"assistant {spec.label()}"):
            torch.manual_seed(self.seed)  # before build: the initial weights are part of what the seed fixes
            model = build(spec, self.split.input_shape, self.split.num_classes).to(self.device)
            if self.store.has_pair("assistants", key):
                model.load_state_dict(self.store.get_state_dict("assistants", key))
                info = self.store.get_json("assistants", key)
            else:
                t0 = time.perf_counter()
                # After every epoch: a partial checkpoint (in an S3 store too), read back only here, under this lock or
                # claim: after Ctrl-C, or by the machine that takes a dead holder's claim over.
                drops = torch.Generator().manual_seed(self.seed)
                run = Resumable(self.store.partial("assistants", key), f"assistant {spec.label()}",
                                self.recipe.epochs, [drops], f" from {', '.join(g.name for g in parents)}")
                with guided_loss(self.method, model, parents, self.split.train, self.drop_rate, self.seed,
                                 drops) as (loss_fn, extra):
                    fit(model, self.split.train, self.recipe, loss_fn, self.seed, extra=extra,
                        checkpoint=run.checkpoint, resume=run.resume, precision=self.precision)
                info = {"spec": spec.to_dict(), "key": key, "guides": [g.key for g in parents],
                        "val_accuracy": accuracy(model, self.split.val),
                        "seconds": time.perf_counter() - t0, "trained_in_trial": trial_number, "pid": os.getpid()}
                # Weights first, description last: the description's presence means the pair is complete.
                self.store.put_state_dict("assistants", key, model.state_dict())
                self.store.put_json("assistants", key, info)
                run.finished()
                trained_now = True
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        logits = teacher_logits(model, key, self.split, self.store, random_augment=self.random_augment)
        guide = Guide(spec.label(), key, model, logits, info)
        self._guides[key] = guide
        return guide, trained_now
