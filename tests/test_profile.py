"""`kdnas profile ARCH.yaml`: the costs of one architecture, in-process through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdnas.cli import main
from kdnas.costs import count, format_profile
from kdnas.models import make_spec

QUICK = ["--min-seconds", "0.02", "--max-seconds", "0.2"]


@pytest.fixture
def arch(tmp_path: Path) -> Path:
    path = tmp_path / "arch.yaml"
    path.write_text("{family: plain_cnn, channels: [8, 16], hidden: 0}\n")
    return path


def test_json_has_every_cost_with_its_unit(arch: Path, capsys) -> None:
    assert main(["profile", str(arch), "--input", "1,8,8", "--classes", "10", "--json", "--counter", "thop",
                 "--batch-size", "2", "--dtype", "bfloat16", *QUICK]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = count(make_spec({"family": "plain_cnn", "channels": [8, 16], "hidden": 0}), (1, 8, 8), 10, "thop")
    assert (out["params"], out["macs"], out["flops"]) == (expected.params, expected.macs, 2 * expected.macs)
    assert out["counter"] == "thop" and out["input_shape"] == [1, 8, 8]
    assert out["latency_setting"] == {"device": "cpu", "batch_size": 2, "threads": 1, "dtype": "bfloat16"}
    assert 0 < out["latency_raw_ms"] <= out["latency_median_ms"] and out["latency_ms"] > 0


def test_lookup_table_estimate_is_built_once_and_reused(arch: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["profile", str(arch), "--input", "1,8,8", "--classes", "10", "--json", "--estimate", *QUICK]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    table = tmp_path / "cache" / "latency_table.json"
    entries = json.loads(table.read_text())
    # plain_cnn [8, 16] without hidden layer: conv, BN, ReLU, max-pool, conv, BN, ReLU, max-pool, avg-pool,
    # flatten, linear; the two max-pools see different shapes, so every layer call is its own entry.
    assert len(entries) == 11 and first["latency_estimate_ms"] == pytest.approx(sum(entries.values()))
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["latency_estimate_ms"] == first["latency_estimate_ms"]
    assert json.loads(table.read_text()) == entries, "nothing new to time"


def test_human_output_and_count_only(arch: Path, capsys) -> None:
    assert main(["profile", str(arch), "--input", "3,16,16", "--classes", "5", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "plain_cnn(channels=[8, 16]," in out and "3x16x16" in out
    for word in ("params", "MACs", "FLOPs", "latency", " ms ", "flop_counter"):
        assert word in out, word
    assert main(["profile", str(arch), "--input", "3,16,16", "--classes", "5", "--no-latency", "--json"]) == 0
    assert "latency_ms" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("content, flags, message", [
    ("{family: resnet_cifar, depth: 9}", [], "arch.yaml: depth: must be 6n+2"),
    ("{family: vgg}", [], "arch.yaml: family: unknown model family 'vgg'; valid names: mobilenetv2, plain_cnn, resnet_cifar"),
    ("[1, 2", [], "arch.yaml: malformed YAML"),
    ("{family: resnet_cifar}", ["--input", "3,32"], "argument --input: expected C,H,W (three integers)"),
    ("{family: resnet_cifar}", ["--classes", "0"], "`classes >= 1` must hold"),
    ("{family: resnet_cifar}", ["--counter", "ptflops"], "unknown MAC counter 'ptflops'; valid names: flop_counter, fvcore, thop"),
    ("{family: resnet_cifar}", ["--threads", "0"], "kdnas profile: threads: `threads >= 1` must hold"),
    ("{family: resnet_cifar}", ["--dtype", "float64"], "kdnas profile: dtype: expected one of 'float32'"),
])
def test_bad_input_exits_2_with_one_clear_message(tmp_path: Path, capsys, content: str, flags: list, message: str) -> None:
    (tmp_path / "arch.yaml").write_text(content + "\n")
    argv = ["profile", str(tmp_path / "arch.yaml"), "--input", "1,8,8", "--classes", "10", *flags]
    # argparse keeps the last value of a repeated flag, so a test flag overrides the defaults above.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_file_and_missing_cuda(tmp_path: Path, arch: Path, capsys) -> None:
    assert main(["profile", str(tmp_path / "nope.yaml"), "--input", "1,8,8", "--classes", "10"]) == 2
    assert "nope.yaml: architecture file not found" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["profile", str(arch), "--input", "1,8,8", "--classes", "10", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_a_slow_network_says_what_it_waits_for_and_keeps_to_max_seconds(tmp_path: Path, capsys) -> None:
    # ~30 ms a pass on one thread here: fewer than the 20 passes a confirmed floor needs fit in 0.4 s.
    arch = tmp_path / "big.yaml"
    arch.write_text("{family: resnet_cifar, depth: 20, width: 1.0}\n")
    assert main(["profile", str(arch), "--input", "3,96,96", "--classes", "10", "--json", "--min-seconds", "0.1",
                 "--max-seconds", "0.4"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "measuring the latency of resnet_cifar(depth=20,width=1.0) on cpu for 0.1-0.4 s" in captured.err
    # Past max_seconds by the round under way at most (one pass, the probe's share), not by a warm-up of
    # three passes of every copy.
    assert out["latency_seconds"] < 0.4 + 4 * out["latency_median_ms"] / 1e3 + 0.3
    if out["latency_calls"] < 20:  # the usual case; a fast machine may fit them all
        text = format_profile(out)
        assert f"only {out['latency_calls']} passes fit in max_seconds" in text and "raise --max-seconds" in text
