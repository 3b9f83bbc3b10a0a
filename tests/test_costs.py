"""Costs: hand counts, the latency estimator on real workloads, its probe and its cache."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kdnas.costs._latency as latency_module
import kdnas.costs._timing as timing
from kdnas.costs import DTYPES, Chain, LatencyCache, LatencySetting, count, measure_calls, measure_latency
from kdnas.costs._probe import Probe
from kdnas.models import build, make_spec
from tests._util import REPO

# Enough to exercise every path; precision is the benchmark's business (benchmarks/latency_stability.py).
QUICK = LatencySetting(min_seconds=0.02, max_seconds=0.2)
TINY = {"family": "resnet_cifar", "depth": 8, "width": 0.25}


def test_resnet8_macs_hand_count() -> None:
    # 8x8 input, widths 4/8/16 (width 0.25). Conv MACs = H_out*W_out*C_in*C_out*9; fc = 16*10.
    spec = make_spec(TINY)
    c = count(spec, (1, 8, 8), 10)
    stem = 64 * 1 * 4 * 9
    s1 = 2 * 64 * 4 * 4 * 9
    s2 = 16 * 4 * 8 * 9 + 16 * 8 * 8 * 9
    s3 = 4 * 8 * 16 * 9 + 4 * 16 * 16 * 9
    assert c.macs == stem + s1 + s2 + s3 + 16 * 10
    assert c.flops == 2 * c.macs
    assert c.params == sum(p.numel() for p in build(spec, (1, 8, 8), 10).parameters())


def test_resnet20_cifar_macs_match_the_literature() -> None:
    # ResNet-20 on 32x32 is usually quoted at 41M multiply-adds (40.55M by exact count).
    c = count(make_spec({"family": "resnet_cifar", "depth": 20}), (3, 32, 32), 10)
    assert 40e6 < c.macs < 41e6


@pytest.mark.parametrize("raw", [TINY, {"family": "plain_cnn", "hidden": 8}, {"family": "mobilenetv2", "width": 0.25}],
                         ids=lambda r: r["family"])
def test_a_pass_timed_step_by_step_is_the_forward_pass(raw: dict) -> None:
    model = build(make_spec(raw), (3, 16, 16), 10).eval()
    x = torch.randn(2, 3, 16, 16)
    chain = Chain.of(model, x)
    assert len(chain.steps) > len(model.chain()), "Sequentials are opened into finer steps"
    assert not any(type(step) is torch.nn.Sequential for step in chain.steps)
    y = chain.x
    with torch.no_grad():
        for step in chain.steps:
            y = step(y)
        torch.testing.assert_close(y, model(x))


def busy(n: int):
    """Pure-Python work whose cost is proportional to ``n``."""
    return lambda: sum(range(n))


def test_interleaved_floors_rank_work_in_proportion() -> None:
    # Twice the work must measure about twice the time, whatever else the machine does meanwhile. The work is
    # in steps of 0.15 ms, as a network's pass is (stem, blocks, head): each step's floor needs a quiet moment
    # that long only. As one step of 1 ms, a loaded machine once gave 3.1 within the 4 s budget.
    # A measurement that says it was not confirmed (latency_stable false: the host was busy throughout, as on
    # one CI run, probe 20 % slow, ratio 3.1) is taken again, up to twice, as a user would rerun `kdnas profile`.
    step = busy(10_000)
    for _ in range(3):
        one, two = measure_calls([[Chain([lambda _: step()] * 2, None)], [Chain([lambda _: step()] * 4, None)]],
                                 LatencySetting(min_seconds=0.3, max_seconds=4.0))
        if one.latency_stable and two.latency_stable:
            break
    # Within 20 %: beside the suite's benchmark smoke runs a confirmed pair once gave 2.30 (0.123 against 0.142 ms
    # a step); the failure this guards against is a busy host's 3.1.
    assert 1.65 < two.latency_ms / one.latency_ms < 2.4
    for r in (one, two):
        assert r.latency_raw_ms <= r.latency_median_ms  # the floor is the fast end of the calls
        assert abs(r.latency_ms / r.latency_raw_ms - 1) <= timing._MAX_CORRECTION + 1e-9  # bounded correction
        assert r.latency_calls >= 20 and r.latency_probe_ms is not None


def test_a_held_measurement_ends_and_confirms_only_after_the_release_on_a_quiet_floor() -> None:
    # While held, the caller's work beside the measurement slows every sample (here: five times the work),
    # so nothing is confirmed and nothing ends then, even past max_seconds; after the release the workload
    # gets its share of min_seconds, and the floor is the quiet one: the slowed samples only add to the slow end.
    # The bound is half the slowdown: a busy CI machine once put the released samples 1.6x above a quiet
    # measurement taken later (when the slowdown was 2x and the bound 1.25x).
    slow, fast = busy(50_000), busy(10_000)
    release = time.perf_counter() + 0.8

    def held() -> bool:
        return time.perf_counter() < release

    setting = LatencySetting(min_seconds=0.2, max_seconds=0.5)
    (r,) = measure_calls([[Chain([lambda _: (slow if held() else fast)()] * 2, None)]], setting, hold=held)
    assert time.perf_counter() >= release + timing._RELEASED * setting.min_seconds
    (quiet,) = measure_calls([[Chain([lambda _: fast()] * 2, None)]], setting)
    assert 0.7 < r.latency_raw_ms / quiet.latency_raw_ms < 2.5, "the held samples set the floor"


def _released_runs(monkeypatch: pytest.MonkeyPatch, release: float) -> list[tuple[object, float]]:
    """(workload, its time budget) of every round's run that starts after ``release``: what a measurement does
    after its hold, counted in rounds rather than wall seconds (a busy machine stretches the seconds: wall-clock
    bounds here failed CI twice, at 0.89 s against 0.55 and 0.61 against 0.6, with every round as designed)."""
    runs: list[tuple[object, float]] = []
    run = timing._Workload.run

    def recording(self, seconds: float) -> None:
        if time.perf_counter() >= release:
            runs.append((self, seconds))
        run(self, seconds)

    monkeypatch.setattr(timing._Workload, "run", recording)
    return runs


_PROBE_S = timing._RELEASED_ROUND_S * timing._RELEASED_PROBE_SHARE  # the probe's share of a released round
_WORK_S = timing._RELEASED_ROUND_S - _PROBE_S  # the workload's


def _workload_rounds(runs: list[tuple[object, float]]) -> int:
    budgets = {round(s, 6) for _, s in runs}
    held_s = round(timing._ROUND_S / 2, 6)  # a held round's share, should one start at the release
    assert {round(_PROBE_S, 6), round(_WORK_S, 6)} <= budgets <= {round(_PROBE_S, 6), round(_WORK_S, 6), held_s}
    return len([s for _, s in runs if round(s, 6) != round(_PROBE_S, 6)])


def test_after_a_long_hold_the_caller_waits_less_than_min_seconds_but_a_short_one_gets_it_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A hold as long as the measurement: its samples count, so the caller, who waits from the release, waits
    # for a share of min_seconds (_RELEASED x 0.6 = 0.15 s of the workload's time: 4 released rounds), not for
    # all of it (16 rounds) as it did before 2026-11-26.
    fast = busy(10_000)
    setting = LatencySetting(min_seconds=0.6, max_seconds=0.6)
    release = time.perf_counter() + 1.0
    runs = _released_runs(monkeypatch, release)
    (r,) = measure_calls([[Chain([lambda _: fast()] * 2, None)]], setting, hold=lambda: time.perf_counter() < release)
    assert _workload_rounds(runs) <= math.ceil(timing._RELEASED * setting.min_seconds / _WORK_S) + 1, runs
    # Released at once (the caller waits as soon as it asks): min_seconds of the workload's own time in all,
    # as without a hold, although max_seconds has passed by then with the probe taking half of every round.
    (r,) = measure_calls([[Chain([lambda _: fast()] * 2, None)]], setting, hold=lambda: False)
    assert r.latency_seconds >= setting.min_seconds


def test_after_the_release_the_workload_takes_most_of_each_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 2-s hold gives the workload 1 s of its own time (half of every round), so after the release it needs
    # max(1.2 - 1.0, _RELEASED x 1.2) = 0.3 s more. In 0.05-s rounds of which the probe takes a quarter that is
    # 8 rounds, 0.4 s; in 0.1-s rounds shared equally with the probe (until 2026-11-26) it was 6 rounds, 0.6 s
    # at least. Confirmed or not (the probe may find the machine busy), it ends once it has been timed: max_seconds
    # has long passed.
    fast = busy(10_000)
    setting = LatencySetting(min_seconds=1.2, max_seconds=1.2)
    assert timing._RELEASED * setting.min_seconds == pytest.approx(0.3)
    release = time.perf_counter() + 2.0
    runs = _released_runs(monkeypatch, release)
    (r,) = measure_calls([[Chain([lambda _: fast()] * 2, None)]], setting, hold=lambda: time.perf_counter() < release)
    assert r.latency_seconds >= setting.min_seconds
    # Every run lasts its budget at least, so 0.3 s of the workload's own time takes 8 released rounds at most
    # (fewer where a busy machine stretches a run), and one more may have begun as the hold ended.
    assert _workload_rounds(runs) <= 8 + 1, runs


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_every_dtype_measures_on_cpu(dtype: str) -> None:
    spec = make_spec(TINY)
    r = measure_latency(build(spec, (1, 8, 8), 10), (1, 8, 8), LatencySetting(dtype=dtype, min_seconds=0.02, max_seconds=0.2))
    # The floor is at the fast end of the passes; the probe's correction moves it by a bounded factor (up to
    # 1.25 when this session's probe history was taken on a busier machine than now).
    assert 0 < r.latency_raw_ms <= r.latency_median_ms + 1e-9
    assert abs(r.latency_ms / r.latency_raw_ms - 1) <= timing._MAX_CORRECTION + 1e-9
    assert isinstance(r.latency_stable, bool)


def test_a_probe_that_never_reaches_its_usual_floor_flags_and_bounds_the_correction(tmp_path: Path) -> None:
    # A usual floor ten times below what the probe can do: the machine never looks quiet, so nothing is
    # confirmed, and the correction stops at its bound instead of dividing by ten.
    path = tmp_path / "probe.json"
    probe = Probe(timing.ESTIMATOR, path)
    path.write_text(json.dumps({probe.key: [0.01] * 5}))
    probe = Probe(timing.ESTIMATOR, path)
    (r,) = measure_calls([[Chain.call(busy(20_000))]], QUICK, probe)
    assert not r.latency_stable
    assert r.latency_ms == pytest.approx(r.latency_raw_ms / (1 + timing._MAX_CORRECTION))
    figures = json.loads(path.read_text())[probe.key]
    assert figures[:5] == [0.01] * 5 and len(figures) == 6 and figures[-1] == r.latency_probe_ms


def test_probe_usual_floor_is_the_median_of_recent_figures_and_survives_damage(tmp_path: Path) -> None:
    path = tmp_path / "probe.json"
    path.write_text("{not json")
    probe = Probe("x", path)
    assert probe.floor is None and probe.quiet(123.0, 0.06)  # nothing known: no evidence against quiet
    for figure in (0.5, 0.7, 0.4, 0.45, 0.9):
        probe.remember(figure)
    again = Probe("x", path)
    assert again.floor == 0.5  # the median: one lucky or unlucky process does not move it
    assert again.quiet(0.52, 0.06) and not again.quiet(0.6, 0.06)
    assert Probe("another estimator", path).floor is None
    for _ in range(40):
        again.remember(1.0)
    assert len(json.loads(path.read_text())[again.key]) == 25 and Probe("x", path).floor == 1.0  # recent ones


def test_latency_is_measured_once_per_spec_and_setting(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = latency_module.measure_latency

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(latency_module, "measure_latency", counting)
    spec = make_spec(TINY)
    cache = LatencyCache(tmp_path / "lat.json")
    first = cache.get_or_measure(spec, (1, 8, 8), 10, QUICK)
    assert first["latency_ms"] > 0 and first["latency_iqr_ms"] >= 0
    assert cache.get_or_measure(spec, (1, 8, 8), 10, QUICK) == first
    # another process (a new cache object on the same file) reuses it, and so does a longer time budget
    longer = LatencySetting(min_seconds=1.0, max_seconds=20.0)
    assert LatencyCache(tmp_path / "lat.json").get_or_measure(spec, (1, 8, 8), 10, longer) == first
    assert len(calls) == 1
    for other in (LatencySetting(batch_size=4, max_seconds=0.2), LatencySetting(dtype="bfloat16", max_seconds=0.2)):
        cache.get_or_measure(spec, (1, 8, 8), 10, other)
    assert len(calls) == 3


def test_measuring_leaves_the_random_state_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    LatencyCache(tmp_path / "lat.json").get_or_measure(make_spec(TINY), (1, 8, 8), 10, QUICK)
    torch.testing.assert_close(torch.rand(3), expected)


def test_damaged_latency_cache_is_remeasured_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "lat.json").write_text("{not json")
    out = LatencyCache(tmp_path / "lat.json").get_or_measure(make_spec(TINY), (1, 8, 8), 10, QUICK)
    assert out["latency_ms"] > 0


@pytest.mark.slow
def test_two_profile_processes_agree_within_5_percent(tmp_path: Path) -> None:
    # The acceptance criterion, end to end: separate `kdnas profile` processes on one architecture.
    arch = tmp_path / "arch.yaml"
    arch.write_text("{family: resnet_cifar, depth: 8, width: 0.25}\n")
    cmd = [sys.executable, "-m", "kdnas.cli", "profile", str(arch), "--input", "1,8,8", "--classes", "10", "--json"]
    env = {"PYTHONPATH": str(REPO), "KDNAS_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    figures = [json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout)["latency_ms"]
               for _ in range(2)]
    assert max(figures) / min(figures) - 1 < 0.05, figures
