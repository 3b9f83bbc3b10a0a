"""Random augmentation of a training batch, on the training device, for the whole batch at once.

Per-sample transforms in DataLoader workers (torchvision's usual way) cost a Python call per image; here
one random crop is a pad plus one gather and one flip is one ``torch.where``, whatever the batch size.
The random draws come from the caller's CPU generator, so a seeded run is the same on every device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Augment:
    """Random augmentation of training inputs (a section of a training recipe: ``student.train.augment``).

    Evaluation and the teacher's cached outputs always see inputs without it.
    """

    # Pad each side by this many pixels of black and crop back to the original size at a random offset;
    # 0 = off. 4 on 32x32 images is the CIFAR standard of He et al. (2016).
    random_crop: int = 0
    # Mirror left-right with probability 1/2. Right for photos; wrong for digits (a mirrored 3 is no 3).
    horizontal_flip: bool = False

    def check(self, report) -> None:
        if self.random_crop < 0:
            report("random_crop", f"`random_crop >= 0` must hold, but got random_crop={self.random_crop}")

    @property
    def active(self) -> bool:
        return self.random_crop > 0 or self.horizontal_flip

    def to_dict(self) -> dict:
        return asdict(self)


def random_crop(x: torch.Tensor, pad: int, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) by ``pad`` pixels of ``fill`` (1, C, 1, 1), then crop each sample at its own offset."""
    b, c, h, w = x.shape
    padded = fill.to(x.dtype).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H): the rows each sample keeps
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: the result is (B, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def horizontal_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each sample of ``x`` (B, C, H, W) left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment_batch(x: torch.Tensor, augment: Augment, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` with ``augment`` applied; ``fill`` is the normalised value of a black pixel, per channel."""
    if augment.random_crop:
        x = random_crop(x, augment.random_crop, fill, gen)
    if augment.horizontal_flip:
        x = horizontal_flip(x, gen)
    return x.contiguous()
