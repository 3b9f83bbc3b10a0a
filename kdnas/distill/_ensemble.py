"""Teacher ensembles: a student distilled from several teachers at once.

The ensemble's soft targets at temperature T are the mean of its members' softened outputs::

    p_ens(T) = (1 / K) * sum_k softmax(z_k / T)

as Hinton et al. 2015 (sec. 1: "an arithmetic or geometric mean of their individual predictive
distributions") and You et al. 2017 ("Learning from Multiple Teacher Networks", KDD: the averaged softened
outputs of the teachers) distil an ensemble. Every logit method (Hinton KD, DKD) reads it through one set of
logits whose softmax at the method's own temperature is exactly that mean::

    z_ens(T) = T * log p_ens(T) = T * (logsumexp_k log_softmax(z_k / T) - log K)

so that softmax(z_ens / T) = p_ens(T), and DKD's target/non-target split is taken of the ensemble's distribution.
The mean is of probabilities, not of logits: averaging logits would let one confident member outvote the rest.

Feature methods (FitNets, AT, CRD, ...) have no single "ensemble feature": the student learns from each member's
features with that member's own adapter, and the distillation term is the mean of the members' terms (the way
DGKD averages its guides, kdnas/distill/_chain.py, here with no member dropped). Each step then runs every
member's forward pass, so such a trial costs about K teacher passes per batch.

Assistants below an ensemble learn from it like from any teacher (the assistants' method, through the same
mean), and the chain is ordered by capacity against the ensemble's total parameter count.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def ensemble_logits(logits: Sequence[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """``T * log(mean_k softmax(z_k / T))`` over the members' logits ``z_k`` (each (B, classes))."""
    t = temperature
    log_p = torch.stack([torch.log_softmax(z.float() / t, dim=1) for z in logits])  # (K, B, C)
    return t * (torch.logsumexp(log_p, dim=0) - math.log(len(logits)))


class Ensemble(nn.Module):
    """The members as one network: ``forward`` returns the log of their mean probabilities (T = 1), whose argmax
    is the ensemble's prediction. Frozen members; never trained as a whole."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_logits([m(x) for m in self.members], 1.0)
