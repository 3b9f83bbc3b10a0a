"""Early stopping: kdnas's own rule in multi-objective studies, Optuna's median pruner with one objective."""

from __future__ import annotations

import json

from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ConfigError
from kdnas.models import build, make_spec
from kdnas.study import open_study
from kdnas.train import EarlyStopping
from kdnas.train._early_stop import stop_reason
from tests._util import write_tiny_study

State = optuna.trial.TrialState


def test_checkpoint_epochs_never_include_the_last() -> None:
    assert EarlyStopping().epochs(6) == [3]
    assert EarlyStopping(checkpoints=[0.2, 0.5, 0.9]).epochs(10) == [2, 5, 9]
    assert EarlyStopping().epochs(1) == []  # stopping after the only epoch saves nothing


def peer(acc: float, params: int, state: State = State.COMPLETE) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(state=state, values=[acc, params] if state == State.COMPLETE else None,
                                     user_attrs={"val_curve": {"3/6": acc}, "params": params})


def test_the_rule_compares_with_trials_no_larger() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for acc, params in [(0.9, 1000), (0.8, 1100), (0.7, 900), (0.99, 5000), (0.6, 800)]:
        study.add_trial(peer(acc, params))
    study.add_trial(peer(0.95, 1000, State.PRUNED))  # stopped trials count too: they reached the checkpoint
    trial = study.ask()
    rule = EarlyStopping(min_trials=4, similar_size=0.25)
    # Peers no larger than 1.25 x 1000: 0.9, 0.8, 0.7, 0.6, 0.95 (not the 5000-parameter one) -> median 0.8.
    reason = stop_reason(rule, trial, "3/6", 0.75, 1000)
    assert reason == ("early stop after epoch 3/6: val accuracy 75.0% is below 80.0%, the median of 5 earlier "
                      "trials with at most 1.25x its 1,000 parameters")
    assert stop_reason(rule, trial, "3/6", 0.8, 1000) is None  # at the median: goes on
    assert stop_reason(rule, trial, "3/6", 0.5, 700) is None  # smaller than all but one: too few peers
    assert stop_reason(rule, trial, "2/6", 0.1, 1000) is None  # no peer has this checkpoint


def test_early_stopping_rules() -> None:
    rule = EarlyStopping(checkpoints=[0.0, 1.5], min_trials=0, similar_size=-1)
    problems: list[str] = []
    rule.check(lambda key, msg: problems.append(f"{key}: {msg}"))
    assert problems == [
        "checkpoints[0]: `0 < checkpoint < 1` (a fraction of the epochs) must hold, but got 0.0",
        "checkpoints[1]: `0 < checkpoint < 1` (a fraction of the epochs) must hold, but got 1.5",
        "min_trials: `min_trials >= 1` must hold, but got min_trials=0",
        "similar_size: `similar_size >= 0` must hold, but got similar_size=-1",
    ]


def study_file(folder: Path, objectives: str, enabled: bool, background: str = "auto") -> Path:
    """Two 2-epoch trials checked after epoch 1, against any earlier trial; an untrained teacher from a
    checkpoint, which is all the rule needs and costs no training."""
    path = write_tiny_study(folder)
    torch.manual_seed(0)
    torch.save(build(make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.5}), (1, 8, 8), 10).state_dict(),
               folder / "teacher.pt")
    text = path.read_text().replace("  train: {epochs: 2, lr: 0.1}\n", "  checkpoint: teacher.pt\n", 1)
    text = text.replace("train: {epochs: 1, lr: 0.1}", "train: {epochs: 2, lr: 0.1}")
    text = text.replace("  trials: 3\n", f"  trials: 2\n  early_stopping: {{enabled: {str(enabled).lower()}, "
                                         f"min_trials: 1, similar_size: 1000}}\n")
    text = text.replace("latency: {min_seconds:", f"latency: {{background: {background}, min_seconds:")
    path.write_text(text.replace("objectives: [accuracy, params, latency]", f"objectives: {objectives}"))
    return path


def seed_a_perfect_peer(path: Path) -> None:
    """An earlier trial that was perfect after epoch 1 of 2: every new trial trails it."""
    cfg = load_study(path)
    study = open_study(cfg, create=True)
    attrs = {"val_curve": {"1/2": 1.0}, "params": 1, "macs": 1, "val_accuracy": 1.0, "test_accuracy": 1.0,
             "latency_ms": 0.01, "latency_iqr_ms": 0.0, "student": "perfect", "method": "none"}
    values = [1.0] + [1.0 for _ in cfg.objectives[1:]]
    study.add_trial(optuna.trial.create_trial(state=State.COMPLETE, values=values, user_attrs=attrs,
                                              intermediate_values={1: 1.0}))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names
@pytest.mark.parametrize("objectives, enabled, background", [("[accuracy, params, latency]", True, "auto"),
                                                             ("[accuracy]", True, "auto"),
                                                             ("[accuracy, params, latency]", True, "false"),
                                                             # Switched off: every benchmark and most study
                                                             # tests run so; slow, to keep the suite near 6 min.
                                                             pytest.param("[accuracy, params, latency]", False, "auto",
                                                                          marks=pytest.mark.slow)])
def test_trailing_trials_are_pruned_with_their_reason(tmp_path: Path, monkeypatch, capsys, objectives: str,
                                                      enabled: bool, background: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path, objectives, enabled, background)
    seed_a_perfect_peer(path)
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials
    if not enabled:  # switched off, nothing stops
        assert [t.state for t in trials] == [State.COMPLETE] * 3
        return
    assert [t.state for t in trials] == [State.COMPLETE, State.PRUNED, State.PRUNED]
    for t in trials[1:]:
        assert t.user_attrs["prune_reason"].startswith("early stop after epoch 1/2: ")
        assert set(t.user_attrs["val_curve"]) == {"1/2"} and "loss_history" not in t.user_attrs
        assert f"PRUNED: {t.user_attrs['prune_reason']}" in out
    csv = pd.read_csv(tmp_path / "reports/tiny/trials.csv")
    assert csv.loc[csv["state"] == "PRUNED", "reason"].str.startswith("early stop").all()
    # A stopped trial keeps a latency figure that was in hand: measured in the background process, or cached
    # (the tiny space has two students). Measuring one in the study's process only for it costs time for nothing.
    measured = [t for t in trials[1:] if "latency_ms" in t.user_attrs]
    cached = json.loads((tmp_path / "runs/tiny/latency_cache.json").read_text())
    if background == "false":  # only the teacher was measured; a student of its architecture has its figure
        assert len(cached) == 1
        teachers_arch = "resnet_cifar(depth=8,width=0.5)"
        assert [t.user_attrs["student"] == teachers_arch for t in measured] == [True] * len(measured)
        assert all(t.user_attrs["student"] != teachers_arch for t in trials[1:] if t not in measured)
    else:
        assert len(measured) == 2 and len(cached) >= 2


def test_bad_early_stopping_section_is_a_config_error(tmp_path: Path) -> None:
    path = write_tiny_study(tmp_path)
    with pytest.raises(ConfigError, match=r"search.early_stopping.min_trials: `min_trials >= 1` must hold"):
        load_study(path, {"search": {"early_stopping": {"min_trials": 0}}})
