"""Mixed precision for training: the study's ``precision`` (``auto | fp32 | bf16 | fp16``) on a device.

``bf16`` runs the forward pass and the loss under ``torch.autocast`` in bfloat16: convolutions and matrix products
in bfloat16 on the GPU's tensor cores, while autocast keeps what needs the range in float32 (softmax,
log-softmax, the losses, BatchNorm's statistics) and the weights, gradients and optimizer state stay float32.
bfloat16 has float32's exponent range, so no loss scaling is needed. ``fp16`` is the same in float16, whose
range is small: small gradients would flush to zero, so the loss is scaled up before ``backward`` and the
gradients scaled back before the step (``torch.amp.GradScaler``; a step whose gradients overflowed is skipped and
the scale lowered). ``auto`` is bf16 on CUDA GPUs that support it (compute capability 8.0 and up; every visible
GPU must, so that all of a machine's workers train alike), fp16 otherwise, and fp32 elsewhere: on a CPU with
bfloat16 instructions (this project's AVX512-BF16 VM) bf16 trained the ResNet-20 teacher 1.5x faster within
noise but the small students, where a search spends its time, no faster (docs/gpu.md, 3 seeds); on a CPU
without them bfloat16 is emulated (not measured; expect it slower).

Evaluation, logit tables and the exported weights stay float32 whatever the precision (``predict`` does not
autocast): an accuracy is always that of the float32 network, and latency is measured in the study's own
``costs.latency.dtype``.

The study's default is ``fp32``; see docs/gpu.md "Mixed precision" for what is measured and why.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from kdnas.core import KdnasError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` as it runs on ``device``: ``fp32``, ``bf16`` or ``fp16`` (``auto`` resolved). Raises
    :class:`KdnasError` for bf16 on a GPU without it."""
    if precision not in PRECISIONS:
        raise KdnasError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        # Every visible GPU, not this one alone: a machine's workers sit on different GPUs (kdnas/study/_placement.py)
        # and must train alike, and the command's process trains the teachers for all of them. A machine mixing
        # generations (an RTX 3090 beside a 2080 Ti) gets fp16 everywhere; `precision: bf16` is the user's to ask.
        gpus = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] or [device]
        return "bf16" if all(_native_bf16(g) for g in gpus) else "fp16"
    if precision == "bf16" and device.type == "cuda" and not _native_bf16(device):
        name = torch.cuda.get_device_name(device)
        raise KdnasError(f"precision: bf16 was asked for, but {name} has no bfloat16 arithmetic; use fp16 or auto")
    return precision


def _native_bf16(device: torch.device) -> bool:
    # Compute capability 8.0 (Ampere) and up have bfloat16 tensor cores; torch.cuda.is_bf16_supported() also
    # says yes where bfloat16 is only emulated (slower than float32), and its argument to tell them apart is
    # not in every torch we support.
    return torch.cuda.get_device_capability(device)[0] >= 8


class Mixed:
    """The autocast context and the backward-and-step of one training run at a resolved ``precision``."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in ("fp32", *_DTYPES):
            raise ValueError(f"unresolved precision {precision!r}: call resolve_precision first")
        self.precision = precision
        self.device = torch.device(device)
        # A scaler only for float16; a disabled one would be a no-op with a state to carry around.
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def autocast(self) -> ContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and ``optimizer.step()``, scaled for fp16."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict | None:
        """What a checkpoint must carry to resume exactly (the loss scale and its growth tracker)."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
