"""How sure a study is of a candidate's validation accuracy: a mean over replicates and its standard error.

A candidate's validation accuracy moves for two reasons, and its standard error counts both:

* **the validation images**: a finite set, so the accuracy is a binomial proportion with variance
  ``b = p (1 - p) / n_val`` (0.8 points at 97 % on 360 images, 1.3-2.1 points at 80 % on 1,000-360). Every
  replicate is measured on the same images, so more replicates do not shrink this part;
* **the training seed**: initialisation, batch order, augmentation. Its variance ``s2`` shrinks with the
  number of replicates ``k``.

    se^2 = b + s2 / k

The seed variance of one candidate is rarely known well (it has 1-3 replicates), so it is modelled as a
multiple of the binomial variance, ``s2 = lambda * b``, the *overdispersion* of the study: the pooled ratio of
the seed spread to the binomial variance over every candidate with two or more replicates (a quasi-binomial
model). Why a ratio: small students spread by several points where large ones spread by tenths, and the
binomial variance grows in the same direction as accuracy falls. A candidate with several replicates uses its
own spread, shrunk towards the pooled ratio (two degrees of freedom of prior), so that two replicates that
happen to agree do not claim certainty. Before any candidate is replicated, ``lambda`` is 1 (a seed spreads an
accuracy about as much as the images do: what the MNIST-5k and digits yardsticks show for mid-size students;
small students spread more, which the pooled ratio learns from the first replicates).

Intervals are normal, ``mean +- z se`` at ``LEVEL`` (90 %), clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

LEVEL = 0.9
Z = 1.6448536269514722  # the normal quantile for a two-sided 90 % interval
PRIOR_RATIO = 1.0  # the seed variance, in binomial variances, before any candidate is replicated
PRIOR_DF = 2.0  # how many degrees of freedom that prior (and the pooled ratio, for one candidate) weighs


def binomial_variance(p: float, n_val: int) -> float:
    """``p (1 - p) / n_val``, with ``p`` kept half an image from 0 and 1: a perfect score is not a certain one."""
    n = max(int(n_val), 1)
    p = min(max(p, 0.5 / n), 1 - 0.5 / n)
    return p * (1 - p) / n


def sample_variance(values: Sequence[float]) -> float:
    k = len(values)
    if k < 2:
        return 0.0
    m = sum(values) / k
    return sum((v - m) ** 2 for v in values) / (k - 1)


def overdispersion(groups: Iterable[Sequence[float]], n_val: int) -> float:
    """The pooled seed-to-binomial variance ratio ``lambda`` over the replicated candidates (``groups``: each
    candidate's validation accuracies), shrunk towards ``PRIOR_RATIO`` with ``PRIOR_DF`` degrees of freedom."""
    weighted, df = PRIOR_DF * PRIOR_RATIO, PRIOR_DF
    for values in groups:
        k = len(values)
        if k < 2:
            continue
        b = binomial_variance(sum(values) / k, n_val)
        weighted += (k - 1) * sample_variance(values) / b
        df += k - 1
    return weighted / df


@dataclass(frozen=True)
class Estimate:
    """A candidate's validation accuracy: mean of ``n`` replicates, standard error, 90 % interval."""

    mean: float
    se: float
    n: int
    seed_var: float  # the seed variance used (own spread shrunk to the pooled ratio, or the pooled ratio alone)

    @property
    def lo(self) -> float:
        return max(0.0, self.mean - Z * self.se)

    @property
    def hi(self) -> float:
        return min(1.0, self.mean + Z * self.se)

    @property
    def half_width(self) -> float:
        return Z * self.se

    def overlaps(self, other: "Estimate") -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def text(self) -> str:
        """``97.2 % ± 1.1 (3x)``: mean, the 90 % half-width, replicates."""
        return f"{self.mean:.1%} ± {100 * self.half_width:.1f} ({self.n}x)"


def estimate(values: Sequence[float], n_val: int, ratio: float) -> Estimate:
    """The estimate from one candidate's replicate accuracies, with the study's overdispersion ``ratio``."""
    k = len(values)
    if k == 0:
        raise ValueError("a candidate without a replicate has no estimate")
    mean = sum(values) / k
    b = binomial_variance(mean, n_val)
    pooled = ratio * b
    seed_var = pooled if k < 2 else (PRIOR_DF * pooled + (k - 1) * sample_variance(values)) / (PRIOR_DF + k - 1)
    return Estimate(mean, math.sqrt(b + seed_var / k), k, seed_var)


@dataclass(frozen=True)
class Difference:
    """A paired difference (``a - b``) of two candidates measured on the same images, e.g. KD's gain over
    labels-only for one architecture. The images' binomial error is left out: both are measured on the same
    images, so it largely cancels; what remains is each side's seed variance over its replicates."""

    mean: float
    se: float

    @property
    def lo(self) -> float:
        return self.mean - Z * self.se

    @property
    def hi(self) -> float:
        return self.mean + Z * self.se

    @property
    def within_noise(self) -> bool:
        """Whether the 90 % interval holds 0: the data cannot tell the two apart."""
        return self.lo <= 0 <= self.hi


def difference(a: Estimate, b: Estimate) -> Difference:
    return Difference(a.mean - b.mean, math.sqrt(a.seed_var / a.n + b.seed_var / b.n))


def mean_difference(diffs: Sequence[Difference]) -> Difference:
    """The mean of independent paired differences (one per architecture), with its standard error."""
    m = len(diffs)
    if m == 0:
        raise ValueError("no difference to average")
    return Difference(sum(d.mean for d in diffs) / m, math.sqrt(sum(d.se ** 2 for d in diffs)) / m)
