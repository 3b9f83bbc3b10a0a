"""The ``data`` section of a study file, and the seeded, stratified train/val/test split it describes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from kdnas.core import KdnasError
from kdnas.data._batches import BatchSource, LoaderSource, TensorSource, normalise
from kdnas.data._preprocess import describe
from kdnas.data._sources import DATASETS, Images, Location, RawDataset
from kdnas.models import digest

# Splits whose float32 inputs fit in this many bytes live on the training device as tensors; larger ones
# stream. 2 GiB holds every torchvision set kdnas names (SVHN, the largest, is 1.2 GB), so those train with
# no DataLoader at all; image folders of more than about 10,000 images at 128x128 stream.
IN_MEMORY_MAX_BYTES = 2 * 2**30
# Per-channel mean and std come from at most this many training samples: the estimates settle far sooner,
# and a full pass over a large image folder would cost as much as an epoch.
STATS_SAMPLES = 10_000
_CHUNK = 4096  # samples read and normalised at once when a split is loaded into memory


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    root: Optional[str] = None  # folder with the dataset's files (torchvision sets, imagefolder); relative to the study file
    download: bool = False  # let torchvision download a missing set into root (never done unless asked)
    val_fraction: float = 0.2  # candidates are ranked on this split (a fraction of the official train split, if any)
    test_fraction: Optional[float] = None  # only reported; null = the official test split, or 0.2 where there is none
    seed: int = 0  # the split's seed; part of every cache key
    resize: Optional[int] = None  # imagefolder: resize every image to resize x resize pixels
    channels: Optional[int] = None  # imagefolder: 1 = grayscale, 3 = RGB; null = 3
    in_memory: Optional[bool] = None  # null = by size (IN_MEMORY_MAX_BYTES); false = stream through a DataLoader
    loader_workers: int = 2  # DataLoader worker processes when the data streams

    def check(self, report) -> None:
        if self.dataset not in DATASETS:
            report("dataset", f"unknown dataset {self.dataset!r}; valid names: {', '.join(DATASETS.names())}")
            return
        source = DATASETS.get(self.dataset)
        if source.needs_root and self.root is None:
            report("root", f"dataset {self.dataset!r} is read from a local folder: set data.root to it")
        if not source.needs_root and self.root is not None:
            report("root", f"dataset {self.dataset!r} is embedded in kdnas and reads no folder; remove data.root")
        if self.download and source.files != "torchvision":
            report("download", f"only torchvision datasets can be downloaded, and {self.dataset!r} is not one")
        if self.resize is not None and source.files != "folder":
            report("resize", f"resize applies to dataset 'imagefolder' only, not {self.dataset!r}")
        if self.resize is not None and self.resize < 1:
            report("resize", f"`resize >= 1` must hold, but got resize={self.resize}")
        if self.channels is not None and source.files != "folder":
            report("channels", f"channels applies to dataset 'imagefolder' only ({self.dataset!r} has its own)")
        if self.channels not in (None, 1, 3):
            report("channels", f"expected 1 (grayscale) or 3 (RGB), but got channels={self.channels}")
        if self.loader_workers < 0:
            report("loader_workers", f"`loader_workers >= 0` must hold, but got loader_workers={self.loader_workers}")
        if source.official_test and self.test_fraction is not None:
            report("test_fraction", f"dataset {self.dataset!r} has an official test split, which kdnas uses as the "
                   f"test split; remove test_fraction")
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            if v is not None and not 0 < v < 1:
                report(key, f"`0 < {key} < 1` must hold, but got {key}={v}")
        if self.val_fraction + (self.test_fraction or 0.0) >= 0.9:
            report("", f"val_fraction + test_fraction must leave at least 10% for training, but got "
                   f"{self.val_fraction} + {self.test_fraction}")

    def effective_test_fraction(self) -> Optional[float]:
        """The test fraction used: None where the official test split is used."""
        if DATASETS.get(self.dataset).official_test:
            return None
        return 0.2 if self.test_fraction is None else self.test_fraction


def resolve_root(data: DataConfig, study_file: Optional[Path]) -> Optional[Path]:
    if data.root is None:
        return None
    p = Path(data.root).expanduser()
    return p if p.is_absolute() or study_file is None else study_file.parent / p


def check_data_root(data: DataConfig, study_file: Path, report) -> None:
    """A missing ``data.root`` is a study-file problem, found by ``kdnas validate`` too."""
    problem = _root_problem(data, resolve_root(data, study_file))
    if problem:
        report("data.root", problem)


def _root_problem(data: DataConfig, root: Optional[Path]) -> Optional[str]:
    if root is None or data.download or root.is_dir():
        return None
    # Only torchvision's sets can be downloaded: an image folder is the user's own.
    hint = " (set data.download: true to let torchvision download into it)" if DATASETS.get(data.dataset).files == \
        "torchvision" else ""
    return f"folder not found: {root}{hint}"


def load_raw(data: DataConfig, study_file: Optional[Path] = None) -> RawDataset:
    """``data.dataset`` as its source gives it, before splitting; a missing folder, or fewer than two classes,
    is a KdnasError. ``study_file`` anchors a relative ``data.root`` and names the file in messages."""
    source = DATASETS.get(data.dataset)
    file = f"{study_file}: " if study_file is not None else ""
    where = f"{file}data.root"
    root = resolve_root(data, study_file)
    if source.needs_root:
        if root is None:
            raise KdnasError(f"{where}: dataset {data.dataset!r} is read from a local folder: set data.root to it")
        problem = _root_problem(data, root)
        if problem:
            raise KdnasError(f"{where}: {problem}")
    raw = source.load(Location(root, data.download, data.resize, where, data.channels))
    present = len(np.unique(raw.train_y))
    if present < 2:
        # One class trains every network to 100 %: a search would rank nothing and report a meaningless front.
        place = f"{where}: {root}" if root is not None else f"{file}data.dataset: {data.dataset}"
        raise KdnasError(f"{place} holds {present} class{'' if present == 1 else 'es'}; a classifier needs at least "
                         f"two" + (" (one sub-folder of images per class)" if source.files == "folder" else ""))
    return raw


@dataclass
class DataSplit:
    """The three parts of the split as batch sources on the training device, and what identifies them."""

    train: BatchSource
    val: BatchSource
    test: BatchSource
    num_classes: int
    input_shape: tuple[int, int, int]
    fingerprint: str  # hash of the dataset's content, the split parameters and the split's indices
    in_memory: bool
    preprocess: dict = field(default_factory=dict)  # what a deployed model is fed (kdnas.data._preprocess)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _stratified(y: np.ndarray, idx: np.ndarray, fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``idx`` split into (rest, part): ``part`` holds ``ceil(fraction * len(idx))`` of them, each class in
    proportion, drawn reproducibly for ``seed``.

    The draw is the one ``sklearn.model_selection.train_test_split(idx, test_size=fraction, stratify=y[idx],
    random_state=seed)`` makes (tests/test_data.py checks them equal), re-implemented because the split
    indices are in every cache key and fingerprint, so they must not change with the installed scikit-learn,
    and because importing its model_selection costs every command 1.6-2.2 s.
    """
    n = len(idx)
    n_part = math.ceil(fraction * n)
    n_rest = n - n_part

    def fail(problem: str) -> KdnasError:
        return KdnasError(f"{where}: cannot split {n} samples stratified by class with fraction {fraction:.3g}: "
                          f"{problem}")

    if n_rest <= 0:
        raise fail("no samples would be left on the other side")
    classes, inverse, counts = np.unique(y[idx], return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise fail(f"classes {classes[counts < 2].tolist()} have only 1 sample (each class needs 2)")
    for side, size in (("the rest", n_rest), ("the part split off", n_part)):
        if size < len(classes):
            raise fail(f"{side} would have {size} samples, fewer than the {len(classes)} classes")
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])  # positions in idx, per class
    rng = np.random.RandomState(seed)
    rest_per_class = _apportion(counts, n_rest, rng)
    part_per_class = _apportion(counts - rest_per_class, n_part, rng)
    rest: list[int] = []
    part: list[int] = []
    for c in range(len(classes)):
        shuffled = members[c].take(rng.permutation(counts[c]), mode="clip")
        rest.extend(shuffled[: rest_per_class[c]])
        part.extend(shuffled[rest_per_class[c] : rest_per_class[c] + part_per_class[c]])
    return idx[rng.permutation(rest)], idx[rng.permutation(part)]


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` each class gets, in proportion to ``counts``: the floor of its share, then one
    more to the classes with the largest remainders, ties broken at random by ``rng``."""
    share = counts / counts.sum() * draws
    out = np.floor(share)
    missing = int(draws - out.sum())
    remainder = share - out
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        out[chosen] += 1
        missing -= len(chosen)
    return out.astype(int)


def _stats(images: Images, train: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (1, C, 1, 1) of the training samples, in the scale ``normalise`` divides to."""
    if len(train) > STATS_SAMPLES:
        train = np.sort(np.random.default_rng(seed).choice(train, STATS_SAMPLES, replace=False))
    c = images.shape[0]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(train), _CHUNK):
        x = normalise(torch.from_numpy(images.read(train[i : i + _CHUNK])), torch.zeros(1), torch.ones(1)).double()
        total += x.sum(dim=(0, 2, 3)).numpy()
        sq += (x * x).sum(dim=(0, 2, 3)).numpy()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0)) + 1e-6
    as_t = lambda v: torch.tensor(v, dtype=torch.float32).reshape(1, c, 1, 1)
    return as_t(mean), as_t(std)


def _in_memory(images: Images, idx: np.ndarray, y: np.ndarray, mean, std, device: torch.device) -> TensorSource:
    x = torch.empty((len(idx), *images.shape), dtype=torch.float32, device=device)
    for i in range(0, len(idx), _CHUNK):
        x[i : i + _CHUNK] = normalise(torch.from_numpy(images.read(idx[i : i + _CHUNK])).to(device), mean.to(device),
                                      std.to(device))
    return TensorSource(x, torch.from_numpy(y).to(device), mean, std)


def load_split(data: DataConfig, device: torch.device | str = "cpu", study_file: Optional[Path] = None) -> DataSplit:
    """Load ``data.dataset`` and split it, stratified by class, reproducibly for ``data.seed``.

    With an official test split, that is the test part and val is carved from the official train split;
    otherwise train, val and test are all drawn from the one pool. Inputs are normalised per channel with
    the training part's statistics. ``study_file`` anchors a relative ``data.root`` and names the file in
    messages.
    """
    device = torch.device(device)
    raw = load_raw(data, study_file)
    file = f"{study_file}: " if study_file is not None else ""
    pool = np.arange(len(raw.train_y))
    test_fraction = data.effective_test_fraction()
    if test_fraction is None:
        assert raw.test is not None and raw.test_y is not None
        train, val = _stratified(raw.train_y, pool, data.val_fraction, data.seed, f"{file}data.val_fraction")
        test_images, test, test_y = raw.test, np.arange(len(raw.test_y)), raw.test_y
    else:
        rest, test = _stratified(raw.train_y, pool, test_fraction, data.seed, f"{file}data.test_fraction")
        train, val = _stratified(raw.train_y, rest, data.val_fraction / (1.0 - test_fraction), data.seed,
                                 f"{file}data.val_fraction")
        test_images, test_y = raw.train, raw.train_y
    fingerprint = digest({
        "dataset": data.dataset,
        "content": [raw.train.digest(), raw.test.digest() if raw.test is not None else None],
        "resize": data.resize,
        # Only where it changes what is read, so the fingerprints (and caches) of RGB folders stay as they were.
        **({"channels": data.channels} if data.channels == 1 else {}),
        "val_fraction": data.val_fraction,
        "test_fraction": test_fraction,
        "seed": data.seed,
        "indices": [digest(train.tolist()), digest(val.tolist()), digest(test.tolist())],
    })
    mean, std = _stats(raw.train, train, data.seed)
    n_bytes = 4 * int(np.prod(raw.train.shape)) * (len(train) + len(val) + len(test))
    in_memory = data.in_memory if data.in_memory is not None else n_bytes <= IN_MEMORY_MAX_BYTES

    def part(images: Images, idx: np.ndarray, y: np.ndarray) -> BatchSource:
        if in_memory:
            return _in_memory(images, idx, y[idx], mean, std, device)
        return LoaderSource(images, idx, torch.from_numpy(y[idx]).to(device), mean, std, data.loader_workers)

    classes = raw.classes or [str(i) for i in range(raw.num_classes)]
    return DataSplit(part(raw.train, train, raw.train_y), part(raw.train, val, raw.train_y),
                     part(test_images, test, test_y), raw.num_classes, raw.train.shape, fingerprint, in_memory,
                     describe(raw.train.shape, data.resize, mean, std, classes))
