"""Helpers for the formula tests: seeded float64 tensors and finite-difference gradients."""

from __future__ import annotations

from typing import Callable

import torch


def randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def fd_grad(f: Callable[[torch.Tensor], float], x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central finite differences of the scalar ``f`` at ``x`` (float64): a gradient that trusts no autograd."""
    x = x.detach().clone()
    grad = torch.zeros_like(x)
    flat, g = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        v = flat[i].item()
        flat[i] = v + h
        up = float(f(x))
        flat[i] = v - h
        down = float(f(x))
        flat[i] = v
        g[i] = (up - down) / (2 * h)
    return grad
