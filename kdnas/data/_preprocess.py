"""What a deployed model must be fed, and image files read that way (``kdnas predict``).

A bundle's ``preprocess.json`` holds it: the input shape, how an image file is decoded (``color``: PIL's
"L" for one grayscale channel, "RGB" for three) and resized, the pixel scale, the per-channel mean and std,
and the class names in label order (the order of the model's outputs). Enough to run ``student.onnx``
anywhere::

    x = (decode(file, color) resized to (H, W) as `resize` says) / pixel_scale     # (C, H, W), float
    x = (x - mean[c]) / std[c]                                                     # per channel c
    class = classes[argmax(model(x[None]))]

``read_inputs`` does this with the very classes evaluation uses (:class:`FileImages`, :func:`normalise`),
not a second implementation, so a prediction sees what the validation accuracy was measured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from kdnas.core import KdnasError
from kdnas.data._batches import normalise
from kdnas.data._sources import FileImages

PREPROCESS_FORMAT = 1
_BATCH = 256  # images decoded at once


def describe(shape: tuple[int, int, int], resize: Optional[int], mean: torch.Tensor, std: torch.Tensor,
             classes: Sequence[str]) -> dict[str, Any]:
    """The preprocessing facts of a split (``DataSplit.preprocess``)."""
    c, h, w = shape
    return {
        "format": PREPROCESS_FORMAT,
        "input_shape": [c, h, w],
        "color": "L" if c == 1 else "RGB",
        # Only an image folder with data.resize was resized in training; other images must have the size.
        "resize": {"size": [h, w], "filter": "bilinear"} if resize is not None else None,
        "pixel_scale": 255.0,  # 8-bit pixels are divided by this before normalising
        "mean": [float(v) for v in mean.flatten()],
        "std": [float(v) for v in std.flatten()],
        "classes": [str(name) for name in classes],
    }


def check(pre: dict, where: str) -> None:
    """A readable message for a ``preprocess.json`` that is not one."""
    needed = ("input_shape", "color", "resize", "mean", "std", "classes")
    missing = [k for k in needed if k not in pre]
    if missing:
        raise KdnasError(f"{where}: missing {', '.join(missing)}")
    c = pre["input_shape"][0]
    if pre["color"] not in ("L", "RGB") or len(pre["mean"]) != c or len(pre["std"]) != c:
        raise KdnasError(f"{where}: color, mean and std do not fit input_shape {pre['input_shape']}")


def read_inputs(paths: Sequence[Path], pre: dict, where: str) -> torch.Tensor:
    """Image files as model inputs (N, C, H, W), preprocessed as ``pre`` (a ``preprocess.json``) says."""
    c, h, w = pre["input_shape"]
    hint = f"as {where} requires (the student was trained on unresized images of that size)"
    images = FileImages(Path("."), [str(p) for p in paths], (h, w), pre["resize"] is not None, pre["color"], hint)
    mean = torch.tensor(pre["mean"], dtype=torch.float32).reshape(1, c, 1, 1)
    std = torch.tensor(pre["std"], dtype=torch.float32).reshape(1, c, 1, 1)
    out = [normalise(torch.from_numpy(images.read(np.arange(i, min(i + _BATCH, len(paths))))), mean, std)
           for i in range(0, len(paths), _BATCH)]
    return torch.cat(out) if out else torch.empty(0, c, h, w)
