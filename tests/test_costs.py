from __future__ import annotations

from pathlib import Path

import pytest

from kdnas.costs import LatencyCache, LatencySetting, count
from kdnas.models import build, make_spec


def test_resnet8_macs_hand_count() -> None:
    # 8x8 input, widths 4/8/16 (width 0.25). Conv MACs = H_out*W_out*C_in*C_out*9; fc = 16*10.
    spec = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25})
    c = count(spec, (1, 8, 8), 10)
    stem = 64 * 1 * 4 * 9
    s1 = 2 * 64 * 4 * 4 * 9
    s2 = 16 * 4 * 8 * 9 + 16 * 8 * 8 * 9
    s3 = 4 * 8 * 16 * 9 + 4 * 16 * 16 * 9
    assert c.macs == stem + s1 + s2 + s3 + 16 * 10
    assert c.params == sum(p.numel() for p in build(spec, (1, 8, 8), 10).parameters())


def test_resnet20_cifar_macs_match_the_literature() -> None:
    # ResNet-20 on 32x32 is usually quoted at 41M multiply-adds (40.55M by exact count).
    c = count(make_spec({"family": "resnet_cifar", "depth": 20}), (3, 32, 32), 10)
    assert 40e6 < c.macs < 41e6


def test_latency_is_measured_once_per_spec_and_setting(tmp_path: Path, monkeypatch) -> None:
    import kdnas.costs as costs

    calls = []
    real = costs.measure_latency

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k, repeats=3)

    monkeypatch.setattr(costs, "measure_latency", counting)
    spec = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25})
    model = build(spec, (1, 8, 8), 10)
    cache = LatencyCache(tmp_path / "lat.json")
    first = cache.get_or_measure(spec, model, (1, 8, 8), 10, LatencySetting())
    assert first["latency_ms"] > 0 and first["latency_iqr_ms"] >= 0
    assert cache.get_or_measure(spec, model, (1, 8, 8), 10, LatencySetting()) == first
    # a second process (a new cache object on the same file) reuses it too
    assert LatencyCache(tmp_path / "lat.json").get_or_measure(spec, model, (1, 8, 8), 10, LatencySetting()) == first
    assert len(calls) == 1
    cache.get_or_measure(spec, model, (1, 8, 8), 10, LatencySetting(batch_size=4))
    assert len(calls) == 2


def test_damaged_latency_cache_is_remeasured_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "lat.json").write_text("{not json")
    spec = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25})
    out = LatencyCache(tmp_path / "lat.json").get_or_measure(spec, build(spec, (1, 8, 8), 10), (1, 8, 8), 10, LatencySetting())
    assert out["latency_ms"] > 0
