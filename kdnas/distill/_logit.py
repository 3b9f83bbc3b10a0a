"""Methods that read only the teacher's logits: Hinton KD and decoupled KD; and ``none`` (labels only)."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kdnas.distill._base import Hyper, Method, Step, alpha, temperature, weight


def hinton_kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T**2 * KL(softmax(t / T) || softmax(s / T))``, averaged over the batch (Hinton et al. 2015).

    The T**2 keeps the gradient's scale independent of T (the paper, sec. 2).
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled KD (Zhao et al. 2022, eqs. 4-7): ``(TCKD, NCKD)``, each ``T**2``-scaled and batch-averaged.

    TCKD is the KL between the binary distributions (p_target, 1 - p_target) of teacher and student; NCKD
    the KL between their distributions over the non-target classes alone. As in the authors' code
    (megvii-research/mdistiller, mdistiller/distillers/DKD.py, ``dkd_loss``) both carry T**2. Computed in
    log space (logsumexp) so that a confident teacher gives no log(0); the authors' code instead subtracts
    1000 from the target logit.
    """
    t = temperature
    s, tt = student_logits / t, teacher_logits.detach() / t
    target = F.one_hot(labels, s.shape[1]).bool()
    n, c = s.shape

    def binary_and_rest(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_total = z.logsumexp(1)
        others = z[~target].view(n, c - 1)
        log_binary = torch.stack([z[target] - log_total, others.logsumexp(1) - log_total], 1)
        return log_binary, F.log_softmax(others, dim=1)

    bs, rs = binary_and_rest(s)
    bt, rt = binary_and_rest(tt)
    return _kl_rows(bt, bs).mean() * (t * t), _kl_rows(rt, rs).mean() * (t * t)


class _LabelsOnly(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()

    def forward(self, step: Step) -> torch.Tensor:  # a zero term; make_loss skips it, as `none` has no alpha
        return step.student_logits.new_zeros(())


class _Hinton(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()
        self.t = hp["temperature"]

    def forward(self, step: Step) -> torch.Tensor:
        return hinton_kd_term(step.student_logits, step.teacher_logits, self.t)


class _DKD(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()
        self.hp = dict(hp)

    def forward(self, step: Step) -> torch.Tensor:
        hp = self.hp
        tckd, nckd = dkd_terms(step.student_logits, step.teacher_logits, step.labels, hp["temperature"])
        # mdistiller ramps the term in linearly over its first `warmup` epochs; here over a fraction of the run.
        ramp = min(step.progress / hp["warmup"], 1.0) if hp["warmup"] > 0 else 1.0
        return ramp * (hp["tckd"] * tckd + hp["nckd"] * nckd)


class LabelsOnly(Method):
    """No distillation: cross-entropy on the labels. The baseline every other method must beat."""

    name = "none"
    reads = "labels"
    hyperparameters: Mapping[str, Hyper] = {}
    term = _LabelsOnly


class HintonKD(Method):
    """Soft targets (Hinton et al. 2015): ``D = T**2 * KL(teacher_T || student_T)``."""

    name = "hinton"
    reads = "logits"
    hyperparameters = {
        "temperature": temperature(4.0, "RepDistiller's kd_T for CIFAR-100 (HobbitLong/RepDistiller)"),
        "alpha": alpha(0.9, "RepDistiller's KD run: -r 0.1 -a 0.9 (labels 0.1, soft targets 0.9)"),
    }
    term = _Hinton


class DecoupledKD(Method):
    """Decoupled KD (Zhao et al. 2022): ``D = ramp(progress) * (tckd * TCKD + nckd * NCKD)``, both T**2-scaled."""

    name = "dkd"
    reads = "logits"
    hyperparameters = {
        "temperature": temperature(4.0, "mdistiller's DKD.T"),
        "alpha": alpha(0.5, "mdistiller weighs CE and the DKD term 1:1"),
        "tckd": weight(1.0, "the paper's alpha (mdistiller DKD.ALPHA)"),
        "nckd": weight(8.0, "the paper's beta for most CIFAR-100 pairs (mdistiller DKD.BETA)"),
        "warmup": Hyper(20 / 240, "mdistiller ramps the term in over 20 of its 240 epochs; the same fraction",
                        low=0, high=1, high_open=True),
    }
    term = _DKD
