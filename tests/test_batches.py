"""Batch sources: the in-memory and the DataLoader path keep one contract; on-device augmentation."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdnas.data import Augment, BatchSource, DataConfig, LoaderSource, TensorSource, _batches, augment_batch, load_split
from kdnas.models import build, make_spec
from kdnas.train import TrainRecipe, fit, predict
from tests._datafiles import write_cifar

SPEC = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25})


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, n_train=60, n_test=20)
    return root


def split_of(root: Path, in_memory: bool, workers: int = 0):
    return load_split(DataConfig("cifar10", root=str(root), val_fraction=0.25, in_memory=in_memory,
                                 loader_workers=workers))


class TestBatchSourceContract:
    """Every BatchSource: batches follow ``order``, ``x[i]`` is sample ``idx[i]``, normalised, on the device."""

    @pytest.fixture(params=["tensors", "loader", "loader+worker", "loader+forkserver-worker"])
    def source(self, request, cifar_root: Path, monkeypatch: pytest.MonkeyPatch) -> BatchSource:
        if request.param.endswith("forkserver-worker"):
            # What a process driving a GPU uses (spawn, macOS's and Windows' default, pickles the same way): the
            # dataset must reach a worker that did not fork from this process.
            monkeypatch.setattr(_batches, "_worker_context", lambda device: multiprocessing.get_context("forkserver"))
        split = split_of(cifar_root, request.param == "tensors", workers=int(request.param.endswith("worker")))
        assert isinstance(split.train, TensorSource if request.param == "tensors" else LoaderSource)
        return split.train

    @pytest.fixture
    def reference(self, cifar_root: Path) -> TensorSource:
        return split_of(cifar_root, True).train

    def test_index_order_covers_every_sample_once(self, source: BatchSource, reference: TensorSource) -> None:
        got = list(source.batches(16))
        assert [len(i) for _, i in got] == [16, 16, 13]
        torch.testing.assert_close(torch.cat([i for _, i in got]), torch.arange(45), rtol=0, atol=0)
        x = torch.cat([x for x, _ in got])
        assert x.dtype == torch.float32 and x.device == source.device and x.shape == (45, 3, 32, 32)
        torch.testing.assert_close(x, reference.x, rtol=0, atol=0)  # bit for bit the same inputs

    def test_batches_follow_the_given_order(self, source: BatchSource, reference: TensorSource) -> None:
        order = torch.randperm(45, generator=torch.Generator().manual_seed(1))
        for x, idx in source.batches(8, order):
            torch.testing.assert_close(x, reference.x[idx], rtol=0, atol=0)
        assert torch.equal(torch.cat([i for _, i in source.batches(8, order)]).cpu(), order)

    def test_labels_and_statistics(self, source: BatchSource, reference: TensorSource) -> None:
        assert torch.equal(source.y, reference.y) and len(source) == 45
        torch.testing.assert_close(source.fill, -reference.mean / reference.std)


def test_fit_sees_the_same_batches_from_either_path(cifar_root: Path) -> None:
    """The Batch contract (x, y, idx, progress), augmentation included, does not depend on the path."""
    recipe = TrainRecipe(epochs=2, batch_size=16, augment=Augment(random_crop=4, horizontal_flip=True))

    def batches_seen(split):
        seen = []

        def loss(out, b):
            seen.append((b.x.clone(), b.y.clone(), b.idx.clone(), b.progress))
            return F.cross_entropy(out, b.y)

        torch.manual_seed(0)
        model = build(SPEC, split.input_shape, split.num_classes)
        fit(model, split.train, recipe, loss, seed=3)
        return seen, predict(model, split.val)

    (mem, mem_val), (streamed, streamed_val) = batches_seen(split_of(cifar_root, True)), batches_seen(split_of(cifar_root, False))
    assert len(mem) == len(streamed) == 6
    for a, b in zip(mem, streamed):
        for ta, tb in zip(a[:3], b[:3]):
            torch.testing.assert_close(ta, tb, rtol=0, atol=0)
        assert a[3] == b[3]
    torch.testing.assert_close(mem_val, streamed_val)


def test_random_crop_takes_a_window_of_the_black_padded_image() -> None:
    x = torch.randn(64, 3, 6, 5)
    fill = torch.tensor([-1.0, -2.0, -3.0]).reshape(1, 3, 1, 1)
    out = augment_batch(x, Augment(random_crop=2), fill, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.is_contiguous()
    padded = fill.expand(64, 3, 10, 9).clone()
    padded[:, :, 2:8, 2:7] = x
    offsets = []
    for b in range(64):  # the naive per-sample crop, for reference
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(padded[b, :, dy : dy + 6, dx : dx + 5], out[b])]
        assert windows, f"sample {b} is not a crop of its padded image"
        offsets.append(windows[0])
    assert len(set(offsets)) > 10  # each sample draws its own offset


def test_flip_mirrors_about_half_the_samples_and_is_seeded() -> None:
    x = torch.randn(200, 1, 4, 4)
    out = augment_batch(x, Augment(horizontal_flip=True), torch.zeros(1, 1, 1, 1), torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and 70 < int(flipped.sum()) < 130
    again = augment_batch(x, Augment(horizontal_flip=True), torch.zeros(1, 1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_tensor_source_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="x and y must have the same length, but got 3 and 2"):
        TensorSource(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.long))


def test_large_sets_stream_by_default(cifar_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kdnas.data._split as split_module

    assert split_of(cifar_root, None).in_memory  # 80 CIFAR images are far below the threshold
    # One image's worth of bytes as the threshold: the same data now streams, with the same inputs.
    monkeypatch.setattr(split_module, "IN_MEMORY_MAX_BYTES", 4 * 3 * 32 * 32)
    streamed = split_of(cifar_root, None)
    assert not streamed.in_memory and isinstance(streamed.test, LoaderSource)
    np.testing.assert_array_equal(torch.cat([x for x, _ in streamed.test.batches(7)]).numpy(),
                                  split_of(cifar_root, True).test.x.numpy())
