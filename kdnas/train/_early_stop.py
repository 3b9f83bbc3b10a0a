"""Early stopping of trials, in multi-objective studies too.

Optuna's pruners work through ``trial.report``, which multi-objective studies refuse. So kdnas has its own
rule there: at a checkpoint (a fraction of the trial's epochs), a trial whose validation accuracy is below
the median accuracy, at the same checkpoint, of earlier trials that are no larger than it (parameters
within ``similar_size`` above its own) is stopped and recorded as PRUNED, with the reason. Only trials no
larger count: a trial beaten by larger networks may still be on the Pareto front (it is cheaper); one
beaten by the median of networks its size or smaller most likely is not. With a single objective,
Optuna's median pruner applies the same checkpoints.

Every checkpoint's accuracy is stored with the trial (``val_curve``), so other workers and later runs of
the study compare against it through the storage.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable

import optuna

TrialState = optuna.trial.TrialState


@dataclass(frozen=True)
class EarlyStopping:
    """``search.early_stopping`` in a study file."""

    enabled: bool = True
    # Fractions of the epochs after which a trial may be stopped. Halfway: a brief trial's ranking is
    # mostly settled by then, and stopping there saves half its training.
    checkpoints: list[float] = field(default_factory=lambda: [0.5])
    # Comparable earlier trials needed at a checkpoint before any trial is stopped there: with fewer, the
    # median says little.
    min_trials: int = 4
    # Earlier trials with up to this much more parameters (0.25 = 25%) count as "no larger".
    similar_size: float = 0.25

    def check(self, report) -> None:
        for i, c in enumerate(self.checkpoints):
            if not 0 < c < 1:
                report(f"checkpoints[{i}]", f"`0 < checkpoint < 1` (a fraction of the epochs) must hold, but got {c}")
        if self.min_trials < 1:
            report("min_trials", f"`min_trials >= 1` must hold, but got min_trials={self.min_trials}")
        if self.similar_size < 0:
            report("similar_size", f"`similar_size >= 0` must hold, but got similar_size={self.similar_size}")

    def epochs(self, total: int) -> list[int]:
        """Checkpoint epochs (1-based) of a ``total``-epoch run; the last epoch is never one: nothing to save."""
        return sorted({max(1, math.ceil(c * total)) for c in self.checkpoints} - {total})

    def pruner(self) -> optuna.pruners.BasePruner:
        """For single-objective studies: Optuna's median pruner, reported to at the same checkpoints."""
        if not self.enabled:
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=self.min_trials, n_warmup_steps=0)


def stop_reason(rule: EarlyStopping, trial: optuna.Trial, key: str, accuracy: float, params: int) -> str | None:
    """Why the trial should stop at checkpoint ``key`` (e.g. ``"3/6"``), or None to go on."""
    peers = []
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        acc = t.user_attrs.get("val_curve", {}).get(key)
        if acc is not None and t.user_attrs.get("params", math.inf) <= params * (1 + rule.similar_size):
            peers.append(acc)
    if len(peers) < rule.min_trials:
        return None
    median = statistics.median(peers)
    if accuracy >= median:
        return None
    return (f"early stop after epoch {key}: val accuracy {accuracy:.1%} is below {median:.1%}, the median of "
            f"{len(peers)} earlier trials with at most {1 + rule.similar_size:g}x its {params:,} parameters")


def checkpoint_hook(rule: EarlyStopping, trial: optuna.Trial, epochs: int, params: int,
                    val_accuracy: Callable[[], float],
                    objective: Callable[[float], float] | None = None) -> Callable[[int, float], None] | None:
    """An ``on_epoch`` callback for ``fit`` that evaluates at the checkpoints and raises ``TrialPruned``.

    ``objective`` turns the checkpoint's accuracy into what a single-objective study maximises (its combined
    score), which is what Optuna's pruner compares between trials.
    """
    at = rule.epochs(epochs)
    if not rule.enabled or not at:
        return None
    curve: dict[str, float] = {}
    single = len(trial.study.directions) == 1

    def on_epoch(epoch: int, loss: float) -> None:
        done = epoch + 1
        if done not in at:
            return
        acc = val_accuracy()
        key = f"{done}/{epochs}"
        curve[key] = acc
        trial.set_user_attr("val_curve", dict(curve))
        if single:
            value = objective(acc) if objective is not None else acc
            trial.report(value, done)
            what = f"score {value:.4f}, val accuracy {acc:.1%}" if objective is not None else f"val accuracy {acc:.1%}"
            reason = f"early stop after epoch {key}: Optuna's median pruner ({what})" if trial.should_prune() else None
        else:
            reason = stop_reason(rule, trial, key, acc, params)
        if reason is not None:
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)

    return on_epoch
