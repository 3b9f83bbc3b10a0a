"""Feature distillation terms (FitNets, AT, SP, RKD, PKT, CRD) against hand computations of their formulas.

Each hand computation loops over plain Python floats, written from the paper and checked against the public
reference code cited in kdnas/distill (RepDistiller). Gradients are compared with central finite
differences of the hand computation. Each method's limiting case is checked too.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdnas.distill import METHODS, PairShape, Step
from kdnas.distill._crd import contrast_scores, nce_term
from kdnas.distill._feature import (
    HintRegressor, at_term, hint_term, pkt_term, rkd_angle_term, rkd_distance_term, sp_term,
)
from tests._formulas import fd_grad, randn


def rows(x: torch.Tensor) -> list[list[float]]:
    return x.flatten(1).tolist()


def huber(d: float) -> float:  # smooth L1 with threshold 1, as RKD's reference code uses
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def unit(a: list[float]) -> list[float]:
    n = math.sqrt(dot(a, a))
    return [x / n for x in a] if n > 0 else [0.0] * len(a)


def check(term, hand, student: torch.Tensor, teacher: torch.Tensor, rel: float = 1e-9) -> None:
    """Value against the hand computation; gradient against its finite differences; none to the teacher."""
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    value = term(s, t)
    assert value.item() == pytest.approx(hand(student, teacher), rel=rel)
    value.backward()
    torch.testing.assert_close(s.grad, fd_grad(lambda v: hand(v, teacher), student))
    assert t.grad is None, "no gradient may reach the teacher"


# ---- FitNets ----------------------------------------------------------------------------------------------

def hand_hint(s: torch.Tensor, t: torch.Tensor) -> float:
    a, b = s.flatten().tolist(), t.flatten().tolist()
    return sum((x - y) ** 2 for x, y in zip(a, b)) / len(a)


def test_hint_term_matches_hand_computation() -> None:
    check(hint_term, hand_hint, randn(0, 3, 4, 2, 2), randn(1, 3, 4, 2, 2))


@pytest.mark.parametrize("student,teacher", [((3, 8, 8), (5, 4, 4)), ((6, 2, 2), (4, 4, 4)), ((4, 4, 4), (4, 4, 4))])
def test_hint_regressor_maps_onto_the_teachers_shape(student, teacher) -> None:
    reg = HintRegressor(student, teacher)
    assert reg(torch.randn(2, *student)).shape == (2, *teacher)


def test_hint_term_is_zero_when_the_regressor_reproduces_the_hint() -> None:
    t = randn(2, 2, 3, 2, 2)
    assert hint_term(t.clone(), t).item() == 0.0


# ---- Attention transfer -----------------------------------------------------------------------------------

def hand_at(s: torch.Tensor, t: torch.Tensor, p: float = 2.0) -> float:
    """Q(A) = sum_c |A_c|^p (per position), L2-normalised; mean over samples and positions of (Q_s - Q_t)^2.
    A larger map is first average-pooled in blocks down to the smaller one."""
    def block_mean(f: torch.Tensor, h: int, w: int) -> torch.Tensor:
        kh, kw = f.shape[-2] // h, f.shape[-1] // w
        return f.unfold(2, kh, kh).unfold(3, kw, kw).mean((-1, -2))

    h, w = min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1])
    s, t = block_mean(s, h, w), block_mean(t, h, w)
    total = 0.0
    for b in range(s.shape[0]):
        qs = unit([sum(abs(v) ** p for v in s[b, :, i, j].tolist()) for i in range(h) for j in range(w)])
        qt = unit([sum(abs(v) ** p for v in t[b, :, i, j].tolist()) for i in range(h) for j in range(w)])
        total += sum((a - c) ** 2 for a, c in zip(qs, qt))
    return total / (s.shape[0] * h * w)


@pytest.mark.parametrize("p", [2.0, 1.5])
def test_at_term_matches_hand_computation(p: float) -> None:
    check(lambda s, t: at_term(s, t, p), lambda s, t: hand_at(s, t, p), randn(3, 3, 2, 3, 3), randn(4, 3, 5, 3, 3))


def test_at_term_pools_the_larger_map_to_the_smaller() -> None:
    check(lambda s, t: at_term(s, t, 2.0), hand_at, randn(5, 2, 3, 4, 4), randn(6, 2, 2, 2, 2))
    check(lambda s, t: at_term(s, t, 2.0), hand_at, randn(7, 2, 3, 2, 2), randn(8, 2, 2, 4, 4))


def test_at_term_is_zero_for_scaled_teacher_features() -> None:
    t = randn(9, 2, 4, 3, 3)
    assert at_term(3.0 * t, t, 2.0).item() < 1e-15  # attention maps are normalised: scale does not matter


# ---- Similarity-preserving KD -----------------------------------------------------------------------------

def hand_sp(s: torch.Tensor, t: torch.Tensor) -> float:
    """G = F F^T over flattened features, each row L2-normalised; ||G_t - G_s||_F^2 / b^2."""
    def g(f: list[list[float]]) -> list[list[float]]:
        return [unit([dot(a, c) for c in f]) for a in f]

    gs, gt = g(rows(s)), g(rows(t))
    b = len(gs)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / (b * b)


def test_sp_term_matches_hand_computation() -> None:
    # Different channel counts and resolutions: SP compares b x b matrices, so it needs no adapter.
    check(sp_term, hand_sp, randn(10, 4, 3, 2, 2), randn(11, 4, 6, 1, 1))


def test_sp_term_is_zero_for_scaled_teacher_features() -> None:
    t = randn(12, 5, 3, 2, 2)
    assert sp_term(0.5 * t, t).item() < 1e-15


# ---- Relational KD ----------------------------------------------------------------------------------------

def hand_rkd_distance(s: torch.Tensor, t: torch.Tensor) -> float:
    """psi(i, j) = ||e_i - e_j|| / mu, mu the mean over pairs i != j; Huber over all b^2 entries (the
    diagonal compares 0 with 0), averaged, as the reference code's smooth_l1_loss."""
    def psi(e: list[list[float]]) -> list[list[float]]:
        b = len(e)
        d = [[math.dist(e[i], e[j]) if i != j else 0.0 for j in range(b)] for i in range(b)]
        mu = sum(d[i][j] for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
        return [[x / mu for x in r] for r in d]

    ps, pt = psi(rows(s)), psi(rows(t))
    b = len(ps)
    return sum(huber(ps[i][j] - pt[i][j]) for i in range(b) for j in range(b)) / (b * b)


def hand_rkd_angle(s: torch.Tensor, t: torch.Tensor) -> float:
    """cos of the angle at e_i between e_j and e_k for all triplets (0 where j or k is i); Huber, averaged."""
    def cosines(e: list[list[float]]) -> list[float]:
        b = len(e)
        u = [[unit([x - y for x, y in zip(e[j], e[i])]) for j in range(b)] for i in range(b)]
        return [dot(u[i][j], u[i][k]) for i in range(b) for j in range(b) for k in range(b)]

    cs, ct = cosines(rows(s)), cosines(rows(t))
    return sum(huber(a - c) for a, c in zip(cs, ct)) / len(cs)


def test_rkd_distance_matches_hand_computation() -> None:
    check(rkd_distance_term, hand_rkd_distance, randn(13, 5, 4), 2 * randn(14, 5, 6))


def test_rkd_angle_matches_hand_computation() -> None:
    check(rkd_angle_term, hand_rkd_angle, randn(15, 4, 3), randn(16, 4, 5))


def test_rkd_is_zero_for_a_rotated_scaled_shifted_and_padded_teacher_embedding() -> None:
    # Relations (distances up to the mean, angles) are what RKD transfers; they survive all of these.
    t = randn(17, 6, 4)
    q, _ = torch.linalg.qr(randn(18, 4, 4))
    s = torch.cat([2.5 * t @ q + 1.0, torch.zeros(6, 2, dtype=t.dtype)], 1)
    assert rkd_distance_term(s, t).item() < 1e-20 and rkd_angle_term(s, t).item() < 1e-20


# ---- PKT --------------------------------------------------------------------------------------------------

def hand_pkt(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> float:
    """The authors' code's form: K(i, j) = (cos + 1) / 2 (j = i included), rows normalised to conditional
    probabilities; mean over b^2 entries of q log((q + eps) / (p + eps))."""
    def cond(e: list[list[float]]) -> list[list[float]]:
        e = [[x / (math.sqrt(dot(a, a)) + eps) for x in a] for a in e]
        k = [[(dot(a, c) + 1) / 2 for c in e] for a in e]
        return [[x / sum(r) for x in r] for r in k]

    ps, pt = cond(rows(s)), cond(rows(t))
    b = len(ps)
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(b) for j in range(b)) / b**2


def test_pkt_matches_hand_computation() -> None:
    check(pkt_term, hand_pkt, randn(19, 5, 4), randn(20, 5, 7))


def test_pkt_is_zero_for_a_scaled_teacher_embedding() -> None:
    t = randn(21, 6, 5)
    assert abs(pkt_term(4.0 * t, t).item()) < 1e-12


# ---- CRD --------------------------------------------------------------------------------------------------

def hand_crd(anchor: torch.Tensor, memory: torch.Tensor, idx: list[list[int]], T: float, z: float, n: int) -> float:
    """Eqs. 17-18: h(s) = s / (s + K/N) with s = exp(<m, v> / T) / Z; -(log h(pos) + sum log(1 - h(neg))) / b.
    (1 - h(s) = (K/N) / (s + K/N).) The reference code adds 1e-7 to each denominator."""
    a, m = anchor.tolist(), memory.tolist()
    k = len(idx[0]) - 1
    noise, total = k / n, 0.0
    for b, r in enumerate(idx):
        sc = [math.exp(dot(m[j], a[b]) / T) / z for j in r]
        total += math.log(sc[0] / (sc[0] + noise + 1e-7)) + sum(math.log(noise / (x + noise + 1e-7)) for x in sc[1:])
    return -total / len(idx)


def test_crd_nce_matches_hand_computation() -> None:
    n, T, z = 9, 0.5, 3.0
    memory, anchor = randn(22, n, 4), randn(23, 3, 4)
    idx = [[0, 4, 4, 7], [5, 1, 8, 2], [2, 3, 0, 6]]  # column 0: the positive; a repeated negative is allowed
    r = torch.tensor(idx)
    check(lambda a, m: nce_term(contrast_scores(a, m, r, T, z), n), lambda a, m: hand_crd(a, m, idx, T, z, n),
          anchor, memory)


def test_crd_bank_follows_the_embeddings_and_negatives_skip_the_positive() -> None:
    m = METHODS.get("crd")
    torch.manual_seed(0)
    term = m.build(m.resolve({"negatives": 50, "feat_dim": 8, "momentum": 0.5}), [PairShape((6,), (10,))], 20)
    idx = torch.tensor([3, 7, 11, 19])
    rows = term.rows(idx)
    assert rows.shape == (4, 51) and (rows[:, 0] == idx).all()
    assert (rows[:, 1:] != idx.unsqueeze(1)).all() and rows.min() >= 0 and rows.max() < 20
    fs, ft = torch.randn(4, 6), torch.randn(4, 10)
    old_s, old_t = term.memory_s.clone(), term.memory_t.clone()
    step = Step(torch.zeros(4, 3), None, torch.zeros(4, dtype=torch.long), idx, 0.0, (fs,), (ft,))
    term(step)
    z = term.z
    with torch.no_grad():
        want_s = torch.nn.functional.normalize(0.5 * old_s[idx] + 0.5 * term.embed_s(fs), dim=1)
        want_t = torch.nn.functional.normalize(0.5 * old_t[idx] + 0.5 * term.embed_t(ft), dim=1)
    torch.testing.assert_close(term.memory_s[idx], want_s)
    torch.testing.assert_close(term.memory_t[idx], want_t)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(term.memory_s[untouched], old_s[untouched])
    term(step)
    assert term.z == z, "Z is estimated on the first batch, then fixed"
