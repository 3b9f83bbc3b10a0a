"""Logit distillation terms (Hinton KD, DKD) against hand computations of the papers' formulas.

Each hand computation is written from the paper in plain Python floats; gradients are checked against
central finite differences of the hand computation, so neither check trusts the implementation's autograd.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdnas.distill import METHODS, Step, hinton_kd_term
from kdnas.distill._logit import dkd_terms
from tests._formulas import fd_grad, randn


def softmax(v: list[float], T: float = 1.0) -> list[float]:
    z = [math.exp(x / T) for x in v]
    return [e / sum(z) for e in z]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)


def hand_hinton(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """Hinton et al. 2015, written out: (1-a) CE + a T^2 sum_i p_t,i (log p_t,i - log p_s,i), batch mean."""
    total = 0.0
    for b in range(s.shape[0]):
        ce = -math.log(softmax(s[b].tolist())[int(y[b])])
        total += (1 - alpha) * ce + alpha * T * T * kl(softmax(t[b].tolist(), T), softmax(s[b].tolist(), T))
    return torch.tensor(total / s.shape[0])


def loss_of(name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, progress: float = 0.5, **hp) -> torch.Tensor:
    """The method's full loss ``(1 - alpha) CE + alpha D`` through its registered term module."""
    m = METHODS.get(name)
    hp = m.resolve(hp)
    d = m.build(hp, [], len(y))(Step(s, t, y, torch.arange(len(y)), progress))
    return (1 - hp.get("alpha", 0.0)) * F.cross_entropy(s, y) + hp.get("alpha", 0.0) * d


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (8.0, 0.1)])
def test_hinton_matches_hand_computation(T: float, alpha: float) -> None:
    s, t = randn(0, 5, 7), 3 * randn(1, 5, 7)
    y = torch.randint(0, 7, (5,), generator=torch.Generator().manual_seed(2))
    got = loss_of("hinton", s, t, y, temperature=T, alpha=alpha)
    torch.testing.assert_close(got, hand_hinton(s, t, y, T, alpha).to(got.dtype))


def test_hinton_gradient_matches_closed_form_and_skips_teacher() -> None:
    # d/ds of T^2 KL(p_t || p_s(s/T)) = T (p_s - p_t), per sample, divided by the batch size.
    s = randn(1, 4, 5).requires_grad_()
    t = randn(2, 4, 5).requires_grad_()
    T = 3.0
    hinton_kd_term(s, t, T).backward()
    expected = T * (F.softmax(s.detach() / T, 1) - F.softmax(t.detach() / T, 1)) / 4
    torch.testing.assert_close(s.grad, expected)
    assert t.grad is None, "no gradient may reach the teacher"


def test_identical_student_and_teacher_give_zero_kd_term() -> None:
    s = torch.randn(6, 10)
    assert hinton_kd_term(s, s.clone(), 4.0).abs().item() < 1e-6


def test_alpha_zero_is_label_only_training() -> None:
    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    torch.testing.assert_close(loss_of("hinton", s, t, y, temperature=4.0, alpha=0.0), F.cross_entropy(s, y))
    torch.testing.assert_close(loss_of("none", s, None, y), F.cross_entropy(s, y))


# ---- Decoupled KD (Zhao et al. 2022) ----------------------------------------------------------------------

def hand_dkd(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float) -> tuple[float, float]:
    """Eqs. 4-7: TCKD = KL(b_t || b_s) over (p_target, 1 - p_target); NCKD = KL(p^_t || p^_s) over the
    non-target classes renormalised; both times T^2 and averaged over the batch."""
    tckd = nckd = 0.0
    for b in range(s.shape[0]):
        g = int(y[b])
        ps, pt = softmax(s[b].tolist(), T), softmax(t[b].tolist(), T)
        tckd += kl([pt[g], 1 - pt[g]], [ps[g], 1 - ps[g]])
        hs = [p / (1 - ps[g]) for i, p in enumerate(ps) if i != g]
        ht = [p / (1 - pt[g]) for i, p in enumerate(pt) if i != g]
        nckd += kl(ht, hs)
    n = s.shape[0]
    return T * T * tckd / n, T * T * nckd / n


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_terms_match_hand_computation_value_and_gradient(T: float) -> None:
    s, t = randn(3, 4, 6), 2 * randn(4, 4, 6)
    y = torch.tensor([0, 5, 2, 2])
    tckd, nckd = dkd_terms(s, t, y, T)
    want_t, want_n = hand_dkd(s, t, y, T)
    assert tckd.item() == pytest.approx(want_t, rel=1e-10) and nckd.item() == pytest.approx(want_n, rel=1e-10)
    for which in (0, 1):
        x = s.clone().requires_grad_()
        dkd_terms(x, t, y, T)[which].backward()
        torch.testing.assert_close(x.grad, fd_grad(lambda v: hand_dkd(v, t, y, T)[which], s))


def test_dkd_decomposes_classical_kd() -> None:
    # The paper's eq. 6: KD = TCKD + (1 - p_t,target) NCKD, per sample.
    s, t, y, T = randn(5, 1, 7), randn(6, 1, 7), torch.tensor([3]), 2.0
    tckd, nckd = dkd_terms(s, t, y, T)
    p_target = F.softmax(t / T, 1)[0, 3]
    torch.testing.assert_close(hinton_kd_term(s, t, T), tckd + (1 - p_target) * nckd)


def test_dkd_is_zero_for_a_student_identical_to_its_teacher() -> None:
    s, y = randn(7, 8, 10), torch.arange(8)
    tckd, nckd = dkd_terms(s, s.clone(), y, 4.0)
    assert abs(tckd.item()) < 1e-12 and abs(nckd.item()) < 1e-12


def test_dkd_stays_finite_for_a_certain_teacher() -> None:
    # A teacher that puts all mass on the target: the authors' code needs its -1000 trick here; logsumexp
    # keeps both terms finite.
    s, t, y = randn(8, 4, 5), torch.zeros(4, 5), torch.tensor([0, 1, 2, 3])
    t[torch.arange(4), y] = 500.0
    tckd, nckd = dkd_terms(s.requires_grad_(), t, y, 1.0)
    (tckd + nckd).backward()
    assert torch.isfinite(tckd) and torch.isfinite(nckd) and torch.isfinite(s.grad).all()


def test_dkd_warmup_ramps_the_term_in_over_a_fraction_of_the_run() -> None:
    s, t, y = randn(9, 4, 5), randn(10, 4, 5), torch.tensor([0, 1, 2, 3])
    hp = {"temperature": 4.0, "alpha": 1.0, "tckd": 1.0, "nckd": 8.0, "warmup": 0.2}
    full = loss_of("dkd", s, t, y, progress=0.5, **hp)
    tckd, nckd = dkd_terms(s, t, y, 4.0)
    torch.testing.assert_close(full, tckd + 8.0 * nckd)
    torch.testing.assert_close(loss_of("dkd", s, t, y, progress=0.05, **hp), 0.25 * full)
    assert loss_of("dkd", s, t, y, progress=0.0, **hp).item() == 0.0
    torch.testing.assert_close(loss_of("dkd", s, t, y, progress=0.0, **{**hp, "warmup": 0.0}), full)
