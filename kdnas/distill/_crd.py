"""Contrastive representation distillation (Tian et al. 2020), with its memory bank over the training split.

CRD needs, for every sample, a slowly updated embedding of every other training sample (the memory bank) to
draw many negatives from. With the training split in memory and ``Batch.idx`` naming each sample's row,
that bank is exact: one row per training sample, updated when the sample is seen. Differences from the
reference code (HobbitLong/RepDistiller, ``crd/criterion.py`` and ``crd/memory.py``), and why:

- negatives are drawn uniformly from the other training samples, the noise distribution ``P_n = 1/N`` that
  the NCE loss (eq. 18) assumes; RepDistiller's default ("exact" mode) draws them from other classes only;
- the default number of negatives is 1024, not 16384: a digits-size split has about a thousand samples,
  and on a CPU the bank lookups would otherwise dominate a brief trial.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kdnas.distill._base import Hyper, Method, PairShape, Step, alpha, temperature, weight

NCE_EPS = 1e-7  # RepDistiller's guard in the NCE fractions


def nce_term(scores: torch.Tensor, num_train: int) -> torch.Tensor:
    """Eq. 18 of the paper: ``scores[b, 0]`` is the positive's normalised score ``P(1|x)``, the other columns
    the K negatives'; with noise ``P_n = 1/N`` the loss is ``-(log h(pos) + sum log(1 - h(neg))) / b``,
    ``h(s) = s / (s + K P_n)``."""
    k = scores.shape[1] - 1
    noise = k / num_train
    pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + NCE_EPS))
    neg = torch.log(noise / (scores[:, 1:] + noise + NCE_EPS))
    return -(pos.sum() + neg.sum()) / scores.shape[0]


def contrast_scores(anchor: torch.Tensor, memory: torch.Tensor, rows: torch.Tensor, temperature: float,
                    z: float) -> torch.Tensor:
    """``exp(<memory[rows[b, j]], anchor[b]> / T) / Z``: the positive (column 0) and negatives per anchor.

    All N dot products, then a gather: gathering K+1 bank rows per anchor first (the reference code's way)
    moves b (K+1) d floats, and was measured 45x (CIFAR-size bank) to 130x
    (digits-size bank) slower on a CPU.
    """
    # The bank is a constant here: it is updated outside the graph, with momentum.
    return torch.exp((anchor @ memory.detach().t()).gather(1, rows) / temperature) / z


class Embed(nn.Module):
    """CRD's embedding head: a linear map to the contrast space, then L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class _CRD(nn.Module):
    def __init__(self, hp: Mapping[str, float], pair: PairShape, num_train: int):
        super().__init__()
        d = int(hp["feat_dim"])
        self.hp, self.num_train = dict(hp), num_train
        self.embed_s = Embed(math.prod(pair.student), d)
        self.embed_t = Embed(math.prod(pair.teacher), d)
        # RepDistiller's initial bank: uniform in +-1/sqrt(d/3), i.e. rows of about unit norm.
        stdv = 1.0 / math.sqrt(d / 3)
        self.register_buffer("memory_s", torch.rand(num_train, d) * 2 * stdv - stdv)
        self.register_buffer("memory_t", torch.rand(num_train, d) * 2 * stdv - stdv)
        # Normalising constants Z (eq. 17), estimated on the first batch and then fixed, as in the reference.
        self.z: tuple[float, float] | None = None

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Column 0: each sample's own row; then K rows drawn uniformly from the other samples."""
        k = int(self.hp["negatives"])
        r = torch.randint(0, self.num_train - 1, (len(idx), k), device=idx.device)
        r = r + (r >= idx.unsqueeze(1)).long()  # skip the sample itself: uniform over the other N - 1
        return torch.cat([idx.unsqueeze(1), r], 1)

    def forward(self, step: Step) -> torch.Tensor:
        hp = self.hp
        vs, vt = self.embed_s(step.student_features[0]), self.embed_t(step.teacher_features[0])
        rows = self.rows(step.idx)
        if self.z is None:
            with torch.no_grad():
                self.z = tuple(float(contrast_scores(a, m, rows, hp["temperature"], 1.0).mean()) * self.num_train
                               for a, m in ((vs, self.memory_t), (vt, self.memory_s)))
        z_s, z_t = self.z
        # Both directions (the paper's symmetric form): the student's embedding against the teacher's bank,
        # and the teacher's embedding (through its trainable head) against the student's bank.
        loss = (nce_term(contrast_scores(vs, self.memory_t, rows, hp["temperature"], z_s), self.num_train)
                + nce_term(contrast_scores(vt, self.memory_s, rows, hp["temperature"], z_t), self.num_train))
        with torch.no_grad():  # the banks follow the embeddings with momentum, re-normalised
            m, i = hp["momentum"], step.idx
            # Out of place: the scores' backward pass still needs the bank as it was.
            self.memory_s = self.memory_s.index_put((i,), F.normalize(self.memory_s[i] * m + vs * (1 - m), dim=1))
            self.memory_t = self.memory_t.index_put((i,), F.normalize(self.memory_t[i] * m + vt * (1 - m), dim=1))
        return hp["beta"] * loss


class ContrastiveRD(Method):
    """Contrastive representation distillation (Tian et al. 2020): ``D = beta * (NCE_s + NCE_t)`` on the
    pooled embeddings, with a memory bank of every training sample (see the module docstring)."""

    name = "crd"
    reads = "embedding"
    hyperparameters = {
        "alpha": alpha(0.5, "labels and the term 1:1, as RepDistiller's -r 1 with the term's weight in beta"),
        "beta": weight(0.8, "RepDistiller's -b for CRD"),
        "temperature": temperature(0.07, "RepDistiller's nce_t"),
        "momentum": Hyper(0.5, "RepDistiller's nce_m", low=0, high=1, high_open=True),
        "negatives": Hyper(1024, "RepDistiller uses 16384 on CIFAR's 50k images; see the module docstring",
                           low=1, integer=True),
        "feat_dim": Hyper(128, "RepDistiller's feat_dim", low=1, integer=True),
    }

    def build(self, hp, shapes: list[PairShape], num_train: int) -> nn.Module:
        return _CRD(hp, shapes[0], num_train)
