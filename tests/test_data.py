from __future__ import annotations

import numpy as np
import pytest
import torch

from kdnas.data import load_split
from kdnas.errors import KdnasError


def test_digits_split_is_stratified_disjoint_and_seeded() -> None:
    a = load_split("digits", 0.2, 0.2, 0)
    assert a.sizes() == {"train": 1077, "val": 360, "test": 360}
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    for y in (a.train_y, a.val_y, a.test_y):
        counts = torch.bincount(y, minlength=10).float()
        assert counts.min() / counts.max() > 0.9  # stratified: classes nearly balanced in every split
    # disjoint: no image appears in two splits
    rows = lambda x: {tuple(np.round(r, 4)) for r in x.flatten(1).numpy()}
    assert not rows(a.train_x) & rows(a.test_x)
    b = load_split("digits", 0.2, 0.2, 0)
    torch.testing.assert_close(a.val_x, b.val_x)
    assert a.fingerprint == b.fingerprint
    c = load_split("digits", 0.2, 0.2, 1)
    assert c.fingerprint != a.fingerprint
    # normalised with training statistics
    assert abs(float(a.train_x.mean())) < 1e-4 and abs(float(a.train_x.std()) - 1) < 1e-2


def test_mnist5k_loads_real_images() -> None:
    s = load_split("mnist5k", 0.2, 0.2, 0)
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert sum(s.sizes().values()) == 5000


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(KdnasError, match="unknown dataset 'cifar11'; valid names: digits, mnist5k"):
        load_split("cifar11", 0.2, 0.2, 0)
