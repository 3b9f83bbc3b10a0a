"""Tiny datasets written in the real on-disk formats that kdnas reads (and torchvision downloads).

Each writer returns what it wrote: ``{"train": (x, y), "test": (x, y)}`` with ``x`` as (N, C, H, W) uint8,
so tests can check that the decoded images are exactly the written ones, channels and axes included.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

Written = dict[str, tuple[np.ndarray, np.ndarray]]


def _images(rng: np.random.Generator, n: int, shape: tuple[int, int, int], classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % classes  # every class equally often, so stratified splits work on a few dozen images
    rng.shuffle(y)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), y.astype(np.int64)


def write_cifar(root: Path, hundred: bool = False, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Written:
    """CIFAR-10's ``cifar-10-batches-py/`` (five train batches, ``test_batch``) or CIFAR-100's
    ``cifar-100-python/`` (``train``, ``test``): pickled dicts with ``data`` as (N, 3072) rows of R, G, B planes."""
    rng = np.random.default_rng(seed)
    classes = 5  # labels from a few of the classes keep stratified splits possible on a few dozen images
    train, test = _images(rng, n_train, (3, 32, 32), classes), _images(rng, n_test, (3, 32, 32), classes)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        entry = {"batch_label": name, key: y.tolist(), "data": x.reshape(len(x), -1),
                 "filenames": [f"img_{i}.png" for i in range(len(x))]}
        if hundred:
            entry["coarse_labels"] = (y // 5).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)  # the protocol of the official files

    if hundred:
        dump("train", *train)
        meta = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]}
    else:
        for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
            dump(f"data_batch_{i + 1}", train[0][part], train[1][part])
        meta = {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n_train // 5}
    dump("test", *test) if hundred else dump("test_batch", *test)
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return {"train": train, "test": test}


def _idx(path: Path, arr: np.ndarray) -> None:
    """The idx format of LeCun's MNIST files: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian sizes, bytes."""
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
                     + arr.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, seed: int = 0) -> Written:
    """``<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (folder MNIST or FashionMNIST)."""
    rng = np.random.default_rng(seed)
    train, test = _images(rng, n_train, (1, 28, 28), 10), _images(rng, n_test, (1, 28, 28), 10)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (x, y) in (("train", train), ("t10k", test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return {"train": train, "test": test}


def write_svhn(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Written:
    """``train_32x32.mat`` and ``test_32x32.mat``: ``X`` as (32, 32, 3, N), ``y`` as (N, 1) with 10 for digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    train, test = _images(rng, n_train, (3, 32, 32), 10), _images(rng, n_test, (3, 32, 32), 10)
    root.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in (("train", train), ("test", test)):
        savemat(root / f"{name}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None]})
    return {"train": train, "test": test}


def write_imagefolder(root: Path, per_class: int = 12, classes: tuple[str, ...] = ("cat", "dog", "owl"),
                      sizes: tuple[tuple[int, int], ...] = ((20, 16),), seed: int = 0, channels: int = 3) -> Written:
    """``root/<class>/<i>.png`` RGB images (grayscale with ``channels=1``), cycling through ``sizes`` (width,
    height). ``x`` is returned for the first size only when all share it (decoding order: classes sorted,
    files sorted)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, name in enumerate(sorted(classes)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            Image.fromarray(arr[:, :, 0] if channels == 1 else arr).save(root / name / f"{i:03d}.png")
            xs.append(arr.transpose(2, 0, 1))
            ys.append(c)
    x = np.stack(xs) if len(sizes) == 1 else np.empty(0)
    return {"train": (x, np.array(ys, dtype=np.int64))}


def write_digits_folder(root: Path, per_class: int, name=str) -> dict[str, list[Path]]:
    """The first ``per_class`` of each of scikit-learn's 8x8 digits as an image folder of grayscale PNGs (values
    0..16 scaled to 0..255), digit ``d`` in folder ``name(d)``; returns the files written, per folder."""
    from PIL import Image

    from kdnas.data import DATASETS, Location

    raw = DATASETS.get("digits").load(Location(None))
    x = np.rint(raw.train.read(np.arange(len(raw.train_y)))[:, 0] * 255).astype(np.uint8)
    out: dict[str, list[Path]] = {}
    for d in range(10):
        folder = root / name(d)
        folder.mkdir(parents=True, exist_ok=True)
        out[name(d)] = []
        for i, k in enumerate(np.flatnonzero(raw.train_y == d)[:per_class]):
            Image.fromarray(x[k]).save(folder / f"{i:03d}.png")
            out[name(d)].append(folder / f"{i:03d}.png")
    return out
