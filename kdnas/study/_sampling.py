"""The sampler of one `kdnas search` process (or of one worker of its pool), seeded by its first trial's number.

Every process that adds trials to a study needs a seed of its own: two processes seeded alike sample the same
candidates and train them twice. Before, the seed was the study seed plus the number of trials stored when the
process started, which two commands started together (two terminals, or a pool's workers) both read alike.
Instead the seed is the study seed plus the number of the first trial this process creates: the storage hands
out trial numbers one by one, so no two processes of a study, whenever they start, share a seed. A single
process on a study sees its first trial numbered as many as the trials already stored, so its seed, and
what it samples, is what it was before: a fresh study with a given seed is as reproducible as ever. (A pid or
a random token would also separate processes, but would make every single run irreproducible.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from kdnas.config import StudyConfig


def make_sampler(cfg: StudyConfig, first_trial: int) -> BaseSampler:
    """The sampler for a process whose first trial is number ``first_trial``."""
    seed = cfg.seed + first_trial
    if cfg.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # The constant liar makes a process's sampler count its peers' running trials as bad results, so that
    # parallel processes do not all sample the same promising region; alone, it changes nothing.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class FirstTrialSeeded(BaseSampler):
    """Creates ``make(number)`` when this process's first trial (number ``number``) starts; then delegates to it.

    Optuna calls ``before_trial`` first, right after the storage gave the new trial its number.
    """

    def __init__(self, make: Callable[[int], BaseSampler]):
        self._make = make
        self._inner: BaseSampler | None = None

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self._inner is None:
            self._inner = self._make(trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler().infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._sampler().sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._sampler().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        # Also called when this process fails a dead worker's trial (kdnas.study._liveness) before its own first trial.
        if self._inner is not None:
            self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler().reseed_rng()

    def _sampler(self) -> BaseSampler:
        assert self._inner is not None, "Optuna calls before_trial first"
        return self._inner


def process_sampler(cfg: StudyConfig) -> BaseSampler:
    return FirstTrialSeeded(lambda first: make_sampler(cfg, first))
