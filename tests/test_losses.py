"""Distillation losses against hand computations of the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdnas.distill import METHODS, hinton_kd_term


def hand_hinton(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """Hinton et al. 2015, written out: (1-a) CE + a T^2 sum_i p_t,i (log p_t,i - log p_s,i), batch mean."""
    total = 0.0
    for b in range(s.shape[0]):
        zs = [math.exp(v / T) for v in s[b].tolist()]
        zt = [math.exp(v / T) for v in t[b].tolist()]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
        e = [math.exp(v) for v in s[b].tolist()]
        ce = -math.log(e[int(y[b])] / sum(e))
        total += (1 - alpha) * ce + alpha * T * T * kl
    return torch.tensor(total / s.shape[0])


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (8.0, 0.1)])
def test_hinton_matches_hand_computation(T: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g, dtype=torch.float64), 3 * torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=g)
    got = METHODS.get("hinton").loss(s, t, y, temperature=T, alpha=alpha)
    torch.testing.assert_close(got, hand_hinton(s, t, y, T, alpha).to(got.dtype))


def test_hinton_gradient_matches_closed_form_and_skips_teacher() -> None:
    # d/ds of T^2 KL(p_t || p_s(s/T)) = T (p_s - p_t), per sample, divided by the batch size.
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
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
    torch.testing.assert_close(METHODS.get("hinton").loss(s, t, y, temperature=4.0, alpha=0.0), F.cross_entropy(s, y))
    torch.testing.assert_close(METHODS.get("none").loss(s, None, y), F.cross_entropy(s, y))
