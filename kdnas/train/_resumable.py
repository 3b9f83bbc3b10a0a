"""Long training runs inside a search (the teacher, assistants) that show their progress and survive Ctrl-C.

A :class:`Resumable` is handed to :func:`kdnas.train._fit.fit` as its ``checkpoint`` and ``resume``. After every
epoch it writes the whole training state to a partial checkpoint (atomically) and logs one progress line
through the ``kdnas`` logger, with an estimate of the time left. A later run of the same training (same
cache key, hence same path) continues after the last finished epoch and ends exactly as an uninterrupted run
would: besides what ``fit`` saves, the state holds the global torch generator (CRD samples its negatives
from it) and any generators the loss draws from (DGKD's guide drops). The caller deletes the partial file
once the finished weights are stored.

Callers hold the lock (or the study-wide claim) of the network they train around the whole run: a partial
checkpoint is only ever read or written by the one process that trains it. Given an artifact store's
:class:`~kdnas.core.Partial`, the checkpoint also goes to the store's remote (S3) after every epoch and is
fetched from there at the start, so a machine that takes over a dead holder's claim resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import torch

from kdnas.core import KdnasError, Partial, load_object, save_object

log = logging.getLogger("kdnas")

# Many fast epochs would flood the screen: after the first epoch a line is logged at most this often (and for
# the last epoch always).
PROGRESS_EVERY_S = 10.0


class Resumable:
    """Progress lines and a partial checkpoint at ``path`` (a local file, or an artifact store's
    :class:`Partial`, published after every epoch) for one run of ``epochs`` epochs named ``name`` (e.g.
    ``teacher resnet_cifar(depth=8,width=1.0)``); ``generators`` are saved and restored with it.
    ``detail`` ends the first line of a fresh run (what the network learns from, say).

    Construct it after the model is built: resuming sets the global torch generator.
    """

    def __init__(self, path: Path | Partial, name: str, epochs: int, generators: Sequence[torch.Generator] = (),
                 detail: str = ""):
        self.partial = path if isinstance(path, Partial) else Partial(path)
        self._published = True  # until a put fails: then one warning, not one per epoch
        self.path, self.name, self.epochs, self.generators = self.partial.path, name, epochs, list(generators)
        self.resume: dict | None = self._load()
        self.start = int(self.resume["epoch"]) if self.resume is not None else 0
        if self.resume is not None:
            log.info("%s: resuming after epoch %d/%d", name, self.start, epochs)
        else:
            log.info("training %s (%d epochs)%s ...", name, epochs, detail)
        self._t0 = self._last = time.perf_counter()

    def _load(self) -> dict | None:
        try:
            if not self.partial.fetch().is_file():
                return None
            state = load_object(self.path)
            fit_state, rngs, saved = state["fit"], state["generators"], state["global"]
            if state["epochs"] != self.epochs or len(rngs) != len(self.generators):
                raise KdnasError(f"{self.path}: made for another run ({state['epochs']} epochs)")
            for gen, rng in zip(self.generators, rngs):
                gen.set_state(rng)
            torch.set_rng_state(saved["cpu"])
            # Another machine sharing the run folder may have other GPUs (or none): there CRD's draws differ.
            if saved["cuda"] is not None and torch.cuda.is_available() and len(saved["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(saved["cuda"])
        except (KdnasError, KeyError, TypeError, ValueError, RuntimeError) as err:
            # Only time is lost: the partial state is kdnas's own, and the run starts over and replaces it.
            log.warning("%s: cannot resume from %s (%s); training from the first epoch", self.name, self.path, err)
            return None
        return fit_state

    def checkpoint(self, fit_state: dict) -> None:
        """``fit``'s per-epoch callback: save everything needed to continue, then report progress."""
        save_object(self.path, {"fit": fit_state, "epochs": self.epochs,
                                "generators": [g.get_state() for g in self.generators], "global": _global_rng()})
        # Before the progress line: once a line says epoch k, a machine taking over resumes at least from there.
        self._publish()
        done, now = int(fit_state["epoch"]), time.perf_counter()
        if done - self.start > 1 and done < self.epochs and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        elapsed = now - self._t0
        left = elapsed / (done - self.start) * (self.epochs - done)
        log.info("%s: epoch %d/%d, loss %.3g, %.1f s%s", self.name, done, self.epochs, fit_state["history"][-1],
                 elapsed, f", about {left:.0f} s left" if done < self.epochs else "")

    def _publish(self) -> None:
        try:
            self.partial.publish()
        except KdnasError as err:
            # Training goes on: only a machine that takes over after this holder dies loses time.
            if self._published:
                log.warning("%s: %s; a machine taking it over would resume from an earlier epoch", self.name, err)
            self._published = False
        else:
            self._published = True

    def finished(self) -> None:
        """The trained weights are stored: the partial state is no longer needed (here or in the remote)."""
        try:
            self.partial.remove()
        except KdnasError as err:  # a leftover object costs storage only: the stored weights are read, not it
            log.warning("%s: %s (the partial checkpoint stays there)", self.name, err)


def _global_rng() -> dict:
    # CUDA's generators only once CUDA is in use: asking earlier would initialise it in a CPU-only run.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}
