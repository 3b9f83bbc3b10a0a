"""Rungs inside a study (``search.rungs``; the rule is kdnas/candidates/_rungs.py): the trial that continues a
run, its checkpoint, and the promotion a free worker enqueues.

A run is one replicate of a candidate (one seed) as it climbs: its first trial trains to the first budget and
leaves a checkpoint (model, adapters, optimizer, the shuffling and drop generators, the global generator,
the position in the one learning-rate schedule that spans the last budget); a *promotion* is an enqueued
trial with the same parameters and the run's identity in its attributes, which loads that checkpoint and
trains on to the next budget. So a run promoted to the top ends bit for bit as a flat study of the top budget
would have trained it (tests/test_rungs.py), and its figures at lower rungs are that run's, read mid-schedule.

Workers promote without a lock, as they count replicates: two may enqueue the same promotion; the trial with
the higher number sees the lower one (waiting, running or done) and is pruned at once, giving its ticket back.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch

from kdnas.candidates import CARRIED, CHECKPOINT, EPOCHS, KEY, PROMOTED_FROM, RUN, RUNG, TWIN_OF, Ladder, twin_params
from kdnas.config import StudyConfig
from kdnas.core import ArtifactStore, KdnasError, TrialFailure, load_object
from kdnas.models import digest
from kdnas.study._storage import read_trials

DUPLICATE = "duplicate_promotion"  # set on a promotion another trial already made: it trained nothing
_ACTIVE = ("WAITING", "RUNNING", "COMPLETE")


def budgets(cfg: StudyConfig) -> list[int]:
    """The epochs at which trials end: the rungs, or the one brief budget of a study without them."""
    rungs = cfg.search.rungs
    return list(rungs.epochs) if rungs.enabled else [cfg.student.train.epochs]


def continuation(trial: optuna.Trial) -> dict[str, Any] | None:
    """The enqueued attributes of a promotion (which run, to which rung), or None for a new run."""
    ua = trial.user_attrs
    return {k: ua[k] for k in CARRIED if k in ua} if PROMOTED_FROM in ua else None


def check_duplicate(trial: optuna.Trial, source: int) -> None:
    """Prune this promotion when a lower-numbered trial (waiting, running or done) continues the same run."""
    study = getattr(trial, "study", None)
    if study is None:
        return
    for t in read_trials(study):
        if t.number < trial.number and t.user_attrs.get(PROMOTED_FROM) == source and t.state.name in _ACTIVE:
            reason = f"trial {t.number} already continues trial {source}'s run"
            trial.set_user_attr(DUPLICATE, True)
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)


def checkpoint_key(candidate: str, seed: int, rung: int) -> str:
    """A run's checkpoint at a rung is named by what makes it: its candidate, its seed, the rung."""
    return digest({"candidate": candidate, "seed": seed, "rung": rung}, 16)


def save_run(store: ArtifactStore, key: str, fit_state: dict, drops: torch.Generator) -> None:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    store.put_object("rungs", key, {"fit": fit_state, "drops": drops.get_state(),
                                    "global": {"cpu": torch.get_rng_state(), "cuda": cuda}})


def load_run(store: ArtifactStore, key: str, drops: torch.Generator) -> dict:
    """The fit state of a run's checkpoint; restores its generators. A missing or unreadable one fails the trial
    (the run cannot be continued; the study goes on)."""
    path = store.path("rungs", key)
    try:
        state = load_object(store.fetch("rungs", key))  # written by whichever machine ran the rung below
        drops.set_state(state["drops"])
        torch.set_rng_state(state["global"]["cpu"])
        cuda = state["global"]["cuda"]
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        return state["fit"]
    except (KdnasError, KeyError, TypeError, RuntimeError) as err:
        raise TrialFailure(f"cannot continue the run: its checkpoint {path} does not load ({err})") from None


def promote(cfg: StudyConfig, study: optuna.Study, ladder: Ladder) -> bool:
    """Before a trial: enqueue the next promotion (kdnas/candidates/_rungs.py) when there is one and nothing else
    waits, else (``search.rungs.baselines``) a first run of the labels-only twin of a kept distilled candidate
    that has none, so that its gain can be measured at the budget it climbs to; return whether one was
    enqueued."""
    if not cfg.search.rungs.enabled or ladder.waiting:
        return False
    p = ladder.next_promotion()
    if p is None:
        if not (cfg.search.rungs.baselines and "none" in cfg.space.methods):
            return False
        for e in ladder.missing_twins():
            params = twin_params(e.params)
            if params is not None:
                study.enqueue_trial(params, user_attrs={TWIN_OF: e.key})
                return True
        return False
    source = p.entry.trials.index(p.source)
    epochs = cfg.search.rungs.epochs
    study.enqueue_trial(p.entry.params, user_attrs={
        KEY: p.entry.key, PROMOTED_FROM: p.source, RUNG: p.rung, EPOCHS: epochs[p.rung],
        RUN: p.entry.runs[source], CHECKPOINT: p.entry.checkpoints[source], "seed": p.entry.seeds[source]})
    return True
