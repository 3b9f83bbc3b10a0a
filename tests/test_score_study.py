"""Score-mode and pareto-mode studies on digits, hard limits as Optuna constraints, hypervolume in the report."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pandas as pd
import pytest

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ConfigError
from kdnas.costs import combined_score

PNG = b"\x89PNG\r\n\x1a\n"


def load(name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///runs/{name}/study.db")


def test_score_study_maximises_the_combined_score(tiny_study: Path, tmp_path: Path, capsys) -> None:
    tiny_study.write_text(tiny_study.read_text() + "score: {mode: score, targets: {params: 3000, latency_ms: 0.5}}\n")
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    assert re.search(r"\| score 0\.\d{4}, best 0\.\d{4} \| front", capsys.readouterr().out), "progress shows the score"
    study = load()
    assert [d.name for d in study.directions] == ["MAXIMIZE"] and study.metric_names == ["score"]
    cfg = load_study(tiny_study).score
    for t in study.trials:
        ua = t.user_attrs
        costs = {"params": ua["params"], "macs": ua["macs"], "latency_ms": ua["latency_ms"]}
        assert t.values == [pytest.approx(combined_score(ua["val_accuracy"], costs, cfg))] == [pytest.approx(ua["score"])]
    report = tmp_path / "reports" / "tiny"
    assert (report / "hypervolume.png").read_bytes()[:8] == PNG
    summary = (report / "summary.md").read_text()
    assert "Hypervolume: 0." in summary and "Best combined score:" in summary
    assert pd.read_csv(report / "trials.csv")["score"].notna().all()

    # Other targets would score new trials on another scale than the stored ones: refused at start too.
    tiny_study.write_text(tiny_study.read_text().replace("params: 3000", "params: 6000"))
    capsys.readouterr()
    assert main(["search", str(tiny_study), "--trials", "1"]) == 2
    assert "score.targets.params: the study 'tiny' in storage was searched with 3000.0, now 6000.0" in capsys.readouterr().err
    tiny_study.write_text(tiny_study.read_text().replace("params: 6000", "params: 3000"))

    # The same study name with the other mode is refused, not silently mixed.
    tiny_study.write_text(tiny_study.read_text().replace("mode: score", "mode: pareto"))
    capsys.readouterr()
    assert main(["search", str(tiny_study), "--trials", "1"]) == 2
    assert "score.mode score), but the study file asks for" in capsys.readouterr().err


def test_hard_latency_limit_prunes_before_training(tiny_study: Path, tmp_path: Path, capsys) -> None:
    tiny_study.write_text(tiny_study.read_text() + "score: {limits: {max_latency_ms: 0.000001}}\n")
    assert main(["search", str(tiny_study), "--trials", "2"]) == 1  # nothing completed
    trials = load().trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        assert t.constraints["max_latency_ms"] > 0
        assert t.user_attrs["prune_reason"].startswith("over score.limits.max_latency_ms:")
        assert "weights" not in t.user_attrs and "val_accuracy" not in t.user_attrs, "must not train"
    assert "PRUNED: over score.limits.max_latency_ms" in capsys.readouterr().out


def test_score_and_costs_sections_are_validated_together(tiny_study: Path) -> None:
    tiny_study.write_text(tiny_study.read_text().replace(
        "costs: {latency: {min_seconds: 0.05, max_seconds: 0.3}}",
        "costs: {counter: ptflops, latency: {device: tpu, min_seconds: 2, max_seconds: 1}}\n"
        "score: {targets: {params: 0, flops: 3}, above: 0.5, limits: {max_latency_ms: -1}}"))
    with pytest.raises(ConfigError) as err:
        load_study(tiny_study)
    text = str(err.value)
    for key in ("costs.counter", "costs.latency.device", "costs.latency.min_seconds", "score.targets.flops",
                "score.targets.params", "score.limits.max_latency_ms", "score.above"):
        assert f"{tiny_study}: {key}:" in text, key
    assert "7 problems found" in text
    tiny_study.write_text(tiny_study.read_text().replace("score: {", "score: {mode: best, "))
    with pytest.raises(ConfigError, match="score.mode: expected one of 'pareto', 'score', got 'best'"):
        load_study(tiny_study)


def test_score_study_prunes_on_the_score_at_checkpoints(tiny_study: Path) -> None:
    """Optuna's median pruner compares what the study maximises: the combined score at the checkpoint."""
    tiny_study.write_text(tiny_study.read_text().replace("train: {epochs: 1, lr: 0.1}", "train: {epochs: 2, lr: 0.1}")
                          .replace("trials: 3", "trials: 3\n  early_stopping: {checkpoints: [0.5], min_trials: 1}")
                          + "score: {mode: score, targets: {params: 3000, latency_ms: 0.5}}\n")
    assert main(["search", str(tiny_study), "--trials", "4"]) == 0
    cfg = load_study(tiny_study).score
    trials = load().trials
    for t in trials:
        ua = t.user_attrs
        costs = {"params": ua["params"], "macs": ua["macs"], "latency_ms": ua["latency_ms"]}
        assert t.intermediate_values == {1: pytest.approx(combined_score(ua["val_curve"]["1/2"], costs, cfg))}
        if t.state.name == "PRUNED":
            assert "Optuna's median pruner (score 0." in ua["prune_reason"]
