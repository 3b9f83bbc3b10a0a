"""Methods that read intermediate features: FitNets, attention transfer, similarity-preserving KD, relational
KD and probabilistic knowledge transfer.

Each formula follows the paper and the public reference code of RepDistiller (HobbitLong/RepDistiller,
``distiller_zoo/``, by the CRD authors, who checked several of them with the original authors); where the
two differ, the reference code is followed and the comment says so. The feature a method reads also follows
RepDistiller's ``helper/loops.py``: FitNets a middle stage, AT every stage, SP the last stage, RKD and PKT
the pooled vector before the classifier.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kdnas.distill._base import Hyper, Method, PairShape, Step, alpha, weight


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize feature maps to ``size``: average pooling to shrink, bilinear interpolation to grow."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---- FitNets (Romero et al. 2015) -------------------------------------------------------------------------

class HintRegressor(nn.Module):
    """FitNets' regressor: the student's guided layer mapped onto the teacher's hint layer's shape.

    A resize to the teacher's resolution (when it differs), a 1x1 convolution to its channel count, and
    BatchNorm. The paper uses a convolutional regressor; RepDistiller's ``ConvReg`` is conv-BN-ReLU. The
    BatchNorm is what keeps beta = 100 stable at a learning rate of 0.1 (without it the hint loss diverged
    within five steps on digits); the ReLU is left out because some teachers' stage outputs are negative
    (MobileNetV2's linear bottlenecks), which a ReLU could never regress onto.
    """

    def __init__(self, student: tuple[int, ...], teacher: tuple[int, ...]):
        super().__init__()
        self.size = tuple(teacher[1:])
        self.conv = nn.Conv2d(student[0], teacher[0], 1, bias=False)  # BatchNorm's shift replaces the bias
        self.bn = nn.BatchNorm2d(teacher[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(resize_to(x, self.size)))


def hint_term(regressed: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the regressed student feature and the teacher's hint.

    The paper writes ``1/2 ||u_h - r(v_g)||^2``; RepDistiller (``distiller_zoo/FitNet.py``) averages over all
    elements (``nn.MSELoss``), which keeps the scale independent of the feature size. The average is used.
    """
    return F.mse_loss(regressed, teacher.detach())


class _FitNet(nn.Module):
    def __init__(self, hp: Mapping[str, float], pair: PairShape):
        super().__init__()
        self.beta = hp["beta"]
        self.regressor = HintRegressor(pair.student, pair.teacher)

    def forward(self, step: Step) -> torch.Tensor:
        return self.beta * hint_term(self.regressor(step.student_features[0]), step.teacher_features[0])


# ---- Attention transfer (Zagoruyko & Komodakis 2017) ------------------------------------------------------

def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """``Q = vec(sum_c |A_c|^p / C)``, L2-normalised per sample (the paper's F^p_sum; the mean over channels
    is RepDistiller's ``AT.at``, a constant factor that normalisation removes). The absolute value is the
    paper's |A_c|; RepDistiller omits it, which is the same for p = 2 but NaN for fractional p on features
    that can be negative (MobileNetV2's linear bottlenecks)."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def at_term(fs: torch.Tensor, ft: torch.Tensor, p: float) -> torch.Tensor:
    """Mean over batch and positions of ``(Q_s / |Q_s| - Q_t / |Q_t|)^2`` for one stage pair.

    The paper's per-layer loss is ``beta/2 * || . ||_p`` with beta = 1e3 divided by the number of attention
    elements and the batch size; RepDistiller (``distiller_zoo/AT.py``) uses the squared difference averaged
    over batch and positions, with -b 1000: that is followed. Maps of different sizes are average-pooled to
    the smaller one first, as RepDistiller does.
    """
    size = (min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1]))
    qs, qt = attention_map(resize_to(fs, size), p), attention_map(resize_to(ft.detach(), size), p)
    return (qs - qt).pow(2).mean()


class _AT(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()
        self.beta, self.p = hp["beta"], hp["p"]

    def forward(self, step: Step) -> torch.Tensor:
        pairs = zip(step.student_features, step.teacher_features)
        return self.beta * sum(at_term(fs, ft, self.p) for fs, ft in pairs)


# ---- Similarity-preserving KD (Tung & Mori 2019) ----------------------------------------------------------

def sp_term(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """``||G_t - G_s||_F^2 / b^2`` with ``G = row_normalise(F F^T)`` over the flattened features (eq. 4);
    as RepDistiller's ``distiller_zoo/SP.py``."""
    def gram(f: torch.Tensor) -> torch.Tensor:
        f = f.flatten(1)
        return F.normalize(f @ f.t(), dim=1)

    b = fs.shape[0]
    return (gram(ft.detach()) - gram(fs)).pow(2).sum() / (b * b)


class _SP(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()
        self.beta = hp["beta"]

    def forward(self, step: Step) -> torch.Tensor:
        return self.beta * sp_term(step.student_features[0], step.teacher_features[0])


# ---- Relational KD (Park et al. 2019) ---------------------------------------------------------------------

def _distances(e: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows, 0 on the diagonal, with a gradient that stays finite there."""
    sq = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return torch.where(off, sq.clamp_min(1e-12).sqrt(), torch.zeros_like(sq))


def rkd_distance_term(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """Huber loss between pairwise distances, each divided by its mean over distinct pairs (eqs. 3-5)."""
    ds, dt = _distances(es.flatten(1)), _distances(et.detach().flatten(1))
    ds, dt = ds / ds[ds > 0].mean(), dt / dt[dt > 0].mean()  # mu: the mean distance, as RepDistiller's RKD.py
    return F.smooth_l1_loss(ds, dt)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """``cos`` of the angle at vertex i between j and k: ``<e_ij, e_ik>`` with unit ``e_ij ~ e_j - e_i``."""
    u = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)  # u[i, j] = unit(e_j - e_i); 0 when j == i
    return u @ u.transpose(1, 2)


def rkd_angle_term(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """Huber loss between the cosines of all triplet angles (eqs. 6-7), averaged over all b^3 triplets
    (degenerate ones give 0 on both sides), as RepDistiller's ``distiller_zoo/RKD.py``."""
    return F.smooth_l1_loss(_angles(es.flatten(1)), _angles(et.detach().flatten(1)))


class _RKD(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()
        self.w_d, self.w_a = hp["distance"], hp["angle"]

    def forward(self, step: Step) -> torch.Tensor:
        es, et = step.student_features[0], step.teacher_features[0]
        return self.w_d * rkd_distance_term(es, et) + self.w_a * rkd_angle_term(es, et)


# ---- Probabilistic knowledge transfer (Passalis & Tefas 2018) ---------------------------------------------

PKT_EPS = 1e-7  # the authors' code's guard against division by zero and log(0)


def pkt_term(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """KL between the conditional distributions a cosine kernel ``(cos + 1) / 2`` induces over the batch.

    As the authors' code (passalis/probabilistic_kt, reproduced in RepDistiller's ``distiller_zoo/PKT.py``):
    each row's kernel values include the sample itself (the paper's eq. 12 excludes it) and the loss is the
    mean over all b^2 entries rather than the sum. The code is followed.
    """
    def conditional(e: torch.Tensor) -> torch.Tensor:
        e = e.flatten(1)
        e = e / (e.norm(dim=1, keepdim=True) + PKT_EPS)
        k = (e @ e.t() + 1.0) / 2.0
        return k / k.sum(1, keepdim=True)

    ps, pt = conditional(es), conditional(et.detach())
    return (pt * torch.log((pt + PKT_EPS) / (ps + PKT_EPS))).mean()


class _PKT(nn.Module):
    def __init__(self, hp: Mapping[str, float]):
        super().__init__()
        self.beta = hp["beta"]

    def forward(self, step: Step) -> torch.Tensor:
        return self.beta * pkt_term(step.student_features[0], step.teacher_features[0])


# ---- The methods ------------------------------------------------------------------------------------------

_ALPHA = "labels and the term 1:1, as RepDistiller's -r 1 with the term's weight in beta"


class FitNets(Method):
    """Hints (Romero et al. 2015): ``D = beta * MSE(regressor(student stage), teacher stage)`` at a middle stage.

    One stage of training, as RepDistiller's; the paper first pre-trains up to the guided layer on the hint.
    """

    name = "fitnet"
    reads = "hint"
    hyperparameters = {
        "alpha": alpha(0.5, _ALPHA),
        "beta": weight(10.0, "RepDistiller's -b is 100, which cost about 2 points of accuracy in 5-epoch digits "
                             "runs; 10 did not (docs/methods.md)"),
    }

    def build(self, hp, shapes: list[PairShape], num_train: int) -> nn.Module:
        return _FitNet(hp, shapes[0])


class AttentionTransfer(Method):
    """Attention transfer (Zagoruyko & Komodakis 2017): ``D = beta * sum over stage pairs of at_term``."""

    name = "at"
    reads = "stages"
    hyperparameters = {
        "alpha": alpha(0.5, _ALPHA),
        # The term is a mean over positions, so it grows as maps shrink: the paper's 1e3 is for 32x32 CIFAR
        # inputs; on 8x8 digits it cost 32 to 35 points of accuracy in 5-epoch runs, and 10 at most 1.3
        # (docs/methods.md).
        "beta": weight(10.0, "the paper's and RepDistiller's 1e3 is for 32x32 inputs; see the comment above"),
        "p": Hyper(2.0, "the paper's choice, and RepDistiller's", low=0, low_open=True),
    }
    term = _AT


class SimilarityPreserving(Method):
    """Similarity-preserving KD (Tung & Mori 2019): ``D = beta * sp_term`` on the last stage pair."""

    name = "sp"
    reads = "last_stage"
    hyperparameters = {
        "alpha": alpha(0.5, _ALPHA),
        "beta": weight(300.0, "the paper's and RepDistiller's 3000 cost a MobileNetV2 student 9 points of accuracy "
                              "in 5-epoch digits runs, 300 at most 1.6 (docs/methods.md)"),
    }
    term = _SP


class RelationalKD(Method):
    """Relational KD (Park et al. 2019): ``D = distance * RKD-D + angle * RKD-A`` on the pooled embeddings."""

    name = "rkd"
    reads = "embedding"
    hyperparameters = {
        "alpha": alpha(0.5, _ALPHA),
        "distance": weight(25.0, "the paper's lambda_D (RepDistiller's w_d)"),
        "angle": weight(50.0, "the paper's lambda_A (RepDistiller's w_a)"),
    }
    term = _RKD


class ProbabilisticKT(Method):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018): ``D = beta * pkt_term`` on the embeddings."""

    name = "pkt"
    reads = "embedding"
    hyperparameters = {"alpha": alpha(0.5, _ALPHA), "beta": weight(30000.0, "RepDistiller's -b for PKT")}
    term = _PKT
