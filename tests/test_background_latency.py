"""Latency measured in a child process, beside a study's training or after it: figures, failures, lifetime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

import kdnas.costs._background as background
from kdnas.cli import main
from kdnas.core import TrialFailure
from kdnas.costs import AFTER, BESIDE, HERE, LatencyCache, LatencyService, LatencySetting, measuring_place
from kdnas.models import make_spec
from tests._util import REPO, write_tiny_study

QUICK = LatencySetting(min_seconds=0.05, max_seconds=0.3)
TINY = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25})
CPU = torch.device("cpu")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_auto_measures_beside_the_training_with_a_spare_core_else_after_it_in_the_child(monkeypatch) -> None:
    monkeypatch.setattr(background, "usable_cores", lambda: 4)
    assert measuring_place(LatencySetting(), CPU, threads_in_use=3) == BESIDE
    assert measuring_place(LatencySetting(), CPU, threads_in_use=4) == AFTER, "every core trains"
    assert measuring_place(LatencySetting(threads=2), CPU, threads_in_use=3) == AFTER, "one core left, two wanted"
    assert measuring_place(LatencySetting(), torch.device("cuda"), threads_in_use=4) == BESIDE, "a GPU trains"
    assert measuring_place(LatencySetting(device="cuda"), CPU, threads_in_use=1) == HERE, "GPU latency, GPU work"
    assert measuring_place(LatencySetting(background=True), CPU, threads_in_use=4) == BESIDE
    assert measuring_place(LatencySetting(background=False), CPU, threads_in_use=1) == HERE


def test_after_training_the_child_measures_only_once_the_caller_waits(tmp_path: Path) -> None:
    service = LatencyService()
    submitted = []
    submit = service.submit
    service.submit = lambda *a, **k: submitted.append(a[0]) or submit(*a, **k)
    try:
        cache = LatencyCache(tmp_path / "lat.json", service, after=True)
        pending = cache.request(TINY, (1, 8, 8), 10, QUICK)
        assert pending.costs_a_measurement and not submitted, "nothing runs beside the caller's training"
        figures = pending()
        assert submitted == [TINY] and figures["latency_ms"] > 0 and not pending.costs_a_measurement
        assert cache.service is service, "measured by the child, not in this process"
        again = cache.request(TINY, (1, 8, 8), 10, QUICK)
        assert not again.costs_a_measurement and again() == figures and submitted == [TINY], "cached"
        assert LatencyCache(tmp_path / "lat.json").get_or_measure(TINY, (1, 8, 8), 10, QUICK) == figures
    finally:
        service.close()


def test_after_training_the_child_measures_while_the_caller_evaluates_on_the_other_cores(tmp_path: Path) -> None:
    service = LatencyService()
    submitted = []
    submit = service.submit
    service.submit = lambda *a, **k: submitted.append(a[0]) or submit(*a, **k)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        cache = LatencyCache(tmp_path / "lat.json", service, after=True)
        pending = cache.request(TINY, (1, 8, 8), 10, LatencySetting(threads=2, min_seconds=0.05, max_seconds=0.3))
        assert not submitted
        with pending.meanwhile():
            assert submitted == [TINY], "the child measures from the start of the block"
            assert torch.get_num_threads() == 1, "the caller leaves the child the 2 cores it measures on"
        assert torch.get_num_threads() == 3
        figures = pending()
        assert figures["latency_ms"] > 0 and submitted == [TINY] and cache.service is service
        again = cache.request(TINY, (1, 8, 8), 10, LatencySetting(threads=2, min_seconds=0.05, max_seconds=0.3))
        with again.meanwhile():
            assert torch.get_num_threads() == 3, "a cached figure leaves the caller all its threads"
        assert again() == figures and submitted == [TINY]
    finally:
        torch.set_num_threads(threads)
        service.close()


def test_after_training_a_dead_child_costs_only_measuring_in_process(tmp_path: Path, caplog) -> None:
    service = LatencyService()
    cache = LatencyCache(tmp_path / "lat.json", service, after=True)
    os.kill(service.pid, signal.SIGKILL)
    service._proc.wait()
    assert cache.request(TINY, (1, 8, 8), 10, QUICK)()["latency_ms"] > 0
    assert cache.service is None and "measuring latency in this process from now on" in caplog.text
    service.close()


def test_the_service_measures_in_order_and_reports_a_failure_as_the_trial_reason() -> None:
    service = LatencyService()
    try:
        failing = service.submit(TINY, (0, 8, 8), 10, QUICK)  # an input without channels: the pass raises
        good = service.submit(TINY, (1, 8, 8), 10, QUICK)
        figures = good()  # waiting for the later request first keeps the earlier answer for its caller
        assert figures["latency_ms"] > 0 and figures["latency_calls"] >= 1
        with pytest.raises(TrialFailure, match=r"^latency measurement failed: RuntimeError: "):
            failing()
    finally:
        service.close()
    assert not _alive(service.pid)


def test_the_latency_process_ends_when_the_study_process_is_killed(tmp_path: Path) -> None:
    code = ("import sys, time; from kdnas.costs import LatencyService; s = LatencyService(); "
            "print(s.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 60  # the child may still be importing torch when its stdin closes
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "an orphaned latency process outlived the study"


def test_a_dead_latency_process_costs_only_measuring_in_process(tmp_path: Path, caplog) -> None:
    service = LatencyService()
    cache = LatencyCache(tmp_path / "lat.json", service)
    os.kill(service.pid, signal.SIGKILL)
    figures = cache.request(TINY, (1, 8, 8), 10, QUICK)()
    assert figures["latency_ms"] > 0
    assert cache.service is None and "measuring latency in this process from now on" in caplog.text
    assert LatencyCache(tmp_path / "lat.json").get_or_measure(TINY, (1, 8, 8), 10, QUICK) == figures, "cached"
    service.close()


@pytest.mark.parametrize("mode, cores, place", [("false", 2, HERE), ("true", 1, BESIDE), ("auto", 1, AFTER)])
def test_a_study_records_the_same_latency_figures_either_way(tiny_study: Path, mode: str, cores: int, place: str,
                                                             monkeypatch) -> None:
    started, asked = [], []
    original, request = LatencyService.__init__, LatencyCache.request

    def spy(self) -> None:
        started.append(True)
        original(self)

    def spy_request(self, *args):
        asked.append(self.after)
        return request(self, *args)

    monkeypatch.setattr(LatencyService, "__init__", spy)
    monkeypatch.setattr(LatencyCache, "request", spy_request)
    monkeypatch.setattr(background, "usable_cores", lambda: cores)  # auto with 1 core: every core trains
    tiny_study.write_text(tiny_study.read_text().replace("costs: {latency: {", f"costs: {{latency: {{background: {mode}, "))
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    assert bool(started) == (place != HERE)
    assert asked and set(asked) == {place == AFTER}
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db")
    for t in study.trials:
        assert t.state.name == "COMPLETE"
        assert t.values[2] == t.user_attrs["latency_ms"] > 0
        assert {"latency_raw_ms", "latency_median_ms", "latency_stable", "latency_probe_ms"} <= set(t.user_attrs)
    assert study.user_attrs["teacher"]["latency_ms"] > 0


@pytest.mark.slow  # 8 s; test_a_study_records_the_same_latency_figures_either_way runs each place by default
def test_measuring_beside_the_evaluation_changes_no_trial_result(tmp_path: Path, monkeypatch) -> None:
    # At `threads: 2` with every core training (`after`), the study evaluates each student on one thread
    # while the child measures its latency: the trials must train and score exactly as in a study that
    # measures in its own process, on two threads throughout.
    import kdnas.study._trial as study_module

    monkeypatch.setattr(background, "usable_cores", lambda: 2)
    threads_seen: list[int] = []
    accuracy = study_module.accuracy
    monkeypatch.setattr(study_module, "accuracy", lambda *a: threads_seen.append(torch.get_num_threads()) or accuracy(*a))
    results, seen = {}, {}
    for mode in ("false", "auto"):
        folder = tmp_path / mode
        folder.mkdir()
        monkeypatch.chdir(folder)
        study = write_tiny_study(folder, teacher_width=1.0)  # the students' latencies are not the teacher's
        study.write_text(study.read_text().replace("threads: 1", "threads: 2")
                         .replace("costs: {latency: {", f"costs: {{latency: {{background: {mode}, "))
        threads_seen.clear()
        assert main(["search", str(study), "--trials", "2"]) == 0
        seen[mode] = set(threads_seen)
        trials = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials
        results[mode] = [(t.state.name, t.params, t.user_attrs["weights"], t.user_attrs["val_accuracy"],
                          t.user_attrs["test_accuracy"]) for t in trials]
    assert seen["false"] == {2} and 1 in seen["auto"], "evaluated on one thread beside the child, two otherwise"
    assert results["auto"] == results["false"] and {r[0] for r in results["auto"]} == {"COMPLETE"}


def test_a_measurement_nobody_waits_for_goes_on_past_max_seconds_within_a_bound(monkeypatch) -> None:
    import kdnas.costs._timing as timing
    from kdnas.costs import measure_latency
    from kdnas.models import build

    monkeypatch.setattr(timing._Workload, "confirm", lambda self: False)  # never confirmed
    setting = LatencySetting(min_seconds=0.05, max_seconds=0.2)

    def seconds(more) -> float:
        return measure_latency(build(TINY, (1, 8, 8), 10), (1, 8, 8), setting, more=more).latency_seconds

    bounded = seconds(None)  # in the study's process: max_seconds (plus setting up) bounds it
    assert bounded < 1.5  # 0.4 s here when quiet; 1.08 s once on a loaded CI run
    start = time.perf_counter()
    assert 1.0 <= seconds(lambda: time.perf_counter() - start < 1.0) < bounded + 1.0, "until someone waits"
    # 10 x max_seconds = 2 s, then the round in hand ends; the 0.5 s allow for a slow round on a busy machine.
    assert 2.0 <= seconds(lambda: True) < bounded + 2.5, f"at most {timing._EXTENSION} x max_seconds"


def test_ctrl_c_while_the_teacher_trains_exits_130_and_ends_the_latency_process(tiny_study: Path, monkeypatch,
                                                                                  capsys) -> None:
    import kdnas.study._teacher as teacher_module

    services = []
    original = LatencyService.__init__

    def spy(self) -> None:
        original(self)
        services.append(self)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LatencyService, "__init__", spy)
    monkeypatch.setattr(teacher_module, "fit", interrupted)  # Ctrl-C before the study exists
    assert main(["search", str(tiny_study)]) == 130
    err = capsys.readouterr().err
    assert "interrupted: completed trials are kept" in err and "error" not in err
    assert not (tiny_study.parent / "reports").exists()
    assert services and not any(_alive(s.pid) for s in services), "the latency process outlived the command"
