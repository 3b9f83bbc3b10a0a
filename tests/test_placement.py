"""Workers spread over the GPUs (issue #28), checked without a GPU: each worker's device for several GPU counts,
what a spawned worker receives, and the study file's `parallel.gpus`."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ConfigError, KdnasError
from kdnas.study._placement import placement_line, worker_devices
from kdnas.study._runner import run_worker, worker_args
from kdnas.study._workers import Tickets


@pytest.mark.parametrize("gpus, workers, expected", [
    (1, 4, ["cuda:0"] * 4),                                                   # 4 workers share the one GPU
    (2, 4, ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]),                         # round robin: 2 per GPU
    (2, 3, ["cuda:0", "cuda:1", "cuda:0"]),
    (4, 2, ["cuda:0", "cuda:1"]),                                             # fewer workers than GPUs
    (8, 8, [f"cuda:{i}" for i in range(8)]),
])
def test_workers_go_round_robin_over_every_gpu(gpus: int, workers: int, expected: list[str]) -> None:
    assert worker_devices("cuda", workers, None, gpus) == expected


def test_parallel_gpus_chooses_which_and_a_missing_one_is_one_clear_error() -> None:
    assert worker_devices("cuda", 4, [1, 3], 4) == ["cuda:1", "cuda:3", "cuda:1", "cuda:3"]
    with pytest.raises(KdnasError, match=r"parallel.gpus: GPU 2 was asked for, but this machine has 2 \(0..1\)"):
        worker_devices("cuda", 2, [0, 2], 2)
    with pytest.raises(KdnasError, match="CUDA is not available"):
        worker_devices("cuda", 2, None, 0)


@pytest.mark.parametrize("gpus, workers, per_gpu, expected", [
    (4, 8, 4, ["cuda:0", "cuda:1"] * 4),             # the example: two GPUs used, two left free
    (4, 6, 4, ["cuda:0", "cuda:1"] * 3),             # balanced over the two it needs: 3 + 3, not 4 + 2
    (2, 4, 4, ["cuda:0"] * 4),                       # one GPU is enough
    (4, 4, 1, [f"cuda:{i}" for i in range(4)]),
    (8, 8, 2, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"] * 2),
])
def test_workers_per_gpu_takes_only_the_gpus_the_workers_need(gpus: int, workers: int, per_gpu: int,
                                                              expected: list[str]) -> None:
    devices = worker_devices("cuda", workers, None, gpus, per_gpu)
    assert devices == expected
    assert max(devices.count(d) for d in devices) <= per_gpu


def test_workers_per_gpu_beyond_the_machine_is_one_clear_error() -> None:
    with pytest.raises(KdnasError, match=r"parallel.workers_per_gpu: 8 workers at 2 per GPU need 4 GPUs, but 2 are "
                                         r"available \(cuda:0, cuda:1\)"):
        worker_devices("cuda", 8, None, 2, 2)
    with pytest.raises(KdnasError, match=r"need 2 GPUs, but 1 is available \(cuda:3\)"):
        worker_devices("cuda", 4, [3], 4, 2)
    with pytest.raises(KdnasError, match=r"4 workers on the one GPU cuda:1 exceed 2 per GPU"):
        worker_devices("cuda:1", 4, None, 2, 2)
    assert worker_devices("cpu", 4, None, 0, 2) == ["cpu"] * 4  # a GPU study file run on a laptop: no cap


def test_a_placement_that_cannot_be_is_refused_before_anything_is_written(tiny_study: Path, capsys) -> None:
    """Placement is decided before the teachers train: the cap is checked first (no GPU needed for that)."""
    tiny_study.write_text(tiny_study.read_text() + "parallel: {workers_per_gpu: 2}\n")
    assert main(["search", str(tiny_study), "--trials", "4", "--workers", "4", "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert f"{tiny_study}: parallel.workers_per_gpu: 4 workers on the one GPU cuda:1 exceed 2 per GPU" in err, err
    assert "Traceback" not in err and not (tiny_study.parent / "runs").exists()


def test_a_named_device_is_every_workers_and_cpu_says_nothing() -> None:
    assert worker_devices("cuda:1", 3, None, 4) == ["cuda:1"] * 3  # the user chose the GPU
    assert worker_devices("cpu", 2, [0, 1], 0) == ["cpu", "cpu"]
    assert placement_line(["cpu", "cpu"]) == ""
    assert placement_line(["cuda:0", "cuda:1", "cuda:0"]) == "on cuda:0 (2 workers), cuda:1 (1 worker)"


@pytest.mark.parametrize("gpus", [2, 4])
def test_each_spawned_worker_loads_the_study_on_its_own_gpu(tiny_study: Path, gpus: int) -> None:
    """What `run_pool` hands each worker process, and the study that worker then loads: its device, the command's
    flags kept (no GPU needed: loading validates the device name without touching CUDA)."""
    cfg = load_study(tiny_study, {"search": {"trials": 8}, "device": "cuda"})
    devices = worker_devices(cfg.device, 4, None, gpus)
    args = worker_args(cfg, devices, Tickets(8, shared=False), None, 1, 0.0)
    assert [a[0] for a in args] == [run_worker] * 4 and [a[1] for a in args] == [0, 1, 2, 3]
    loaded = [load_study(Path(a[2]), a[3]) for a in args]
    assert [c.device for c in loaded] == [f"cuda:{i % gpus}" for i in range(4)]
    assert all(c.parallel.workers == 4 and c.search.trials == 8 for c in loaded)


def test_bad_workers_per_gpu_is_one_clear_error(tiny_study: Path, capsys) -> None:
    tiny_study.write_text(tiny_study.read_text() + "parallel: {workers_per_gpu: 0}\n")
    assert main(["validate", str(tiny_study)]) == 2
    assert "parallel.workers_per_gpu: `workers_per_gpu >= 1` must hold" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["[]", "[-1]", "[0, 0]"])
def test_bad_parallel_gpus_is_one_clear_error(tiny_study: Path, capsys, value: str) -> None:
    tiny_study.write_text(tiny_study.read_text() + f"parallel: {{gpus: {value}}}\n")
    with pytest.raises(ConfigError):
        load_study(tiny_study)
    assert main(["validate", str(tiny_study)]) == 2
    assert "parallel.gpus: expected distinct GPU indices >= 0" in capsys.readouterr().err
