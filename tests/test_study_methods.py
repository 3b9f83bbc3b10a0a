"""Distillation methods in studies: the digits_methods study file, feature methods through `kdnas search`,
and the report's accuracy-by-method table."""

from __future__ import annotations

import collections
from pathlib import Path

import optuna
import pytest

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ConfigError
from kdnas.distill import METHODS
from kdnas.results._summary import method_table
from kdnas.study import make_sampler, open_study
from tests._candidate_studies import T, make_study
from tests._util import REPO, write_tiny_study


def test_digits_methods_study_samples_every_method() -> None:
    # What the study file promises: its trial count, seed and sampler reach every registered method, at
    # least twice. Sampling only; nothing is trained.
    cfg = load_study(REPO / "studies/digits_methods.yaml")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=make_sampler(cfg, 0), directions=["maximize"] * len(cfg.objectives))
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(cfg.search.trials):
        trial = study.ask()
        counts[cfg.space.sample(trial).method.name] += 1
        study.tell(trial, [0.0] * len(cfg.objectives))
    assert sorted(counts) == METHODS.names() and min(counts.values()) >= 2, counts


@pytest.mark.slow
def test_digits_methods_study_completes_every_methods_replicates(tmp_path: Path, capsys) -> None:
    # The study file's promise, run for real on a cheaper budget (a small teacher, 1-epoch students): its 45
    # trainings give each of the 9 methods its 5 replicates, whatever the sampler prefers.
    from tests._util import QUICK_LATENCY, working_dir

    text = (REPO / "studies/digits_methods.yaml").read_text()
    text = text.replace("../search_spaces/digits_methods.yaml", str(REPO / "search_spaces/digits_methods.yaml"))
    text = text.replace("arch: {family: resnet_cifar, depth: 20, width: 1.0}", "arch: {family: plain_cnn, channels: [16, 32]}")
    text = text.replace("train: {epochs: 15,", "train: {epochs: 2,").replace("train: {epochs: 4,", "train: {epochs: 1,")
    text = text.replace("latency: {device: cpu, batch_size: 1, threads: 1}", f"latency: {QUICK_LATENCY}")
    (tmp_path / "m.yaml").write_text(text)
    with working_dir(tmp_path):
        assert main(["search", str(tmp_path / "m.yaml")]) == 0
        trials = optuna.load_study(study_name="digits_methods", storage="sqlite:///runs/digits_methods/study.db").trials
    trained = collections.Counter(t.user_attrs["method"].split("(")[0] for t in trials
                                  if t.state.name == "COMPLETE" and not t.user_attrs.get("reused"))
    assert trained == {m: 5 for m in METHODS.names()}, trained


def test_space_rules_for_method_hyperparameters(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(
        "students:\n  resnet_cifar: {depth: 8}\nmethods:\n"
        "  crd: {negatives: {type: float, low: 100, high: 2000}, feat_dim: {type: int, low: 16, high: 256}}\n"
        "  dkd: {warmup: {type: float, low: 0.0, high: 1.0}}\n"
        "  rkd: {}\n"  # every hyperparameter left to its default
    )
    with pytest.raises(ConfigError) as info:
        load_study(study)
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == [
        "methods.crd.negatives: `negatives >= 1` (an integer) must hold, but got negatives=100.0",
        "methods.crd.negatives: `negatives >= 1` (an integer) must hold, but got negatives=2000.0",
        "methods.dkd.warmup: `0 <= warmup < 1` must hold, but got warmup=1.0",
    ]
    fixed = space.read_text().replace("type: float, low: 100", "type: int, low: 100").replace("high: 1.0", "high: 0.5")
    space.write_text(fixed)
    assert sorted(load_study(study).space.methods) == ["crd", "dkd", "rkd"]


def test_a_feature_method_runs_through_search_and_report(tiny_study: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "space.yaml").write_text(
        "students:\n  resnet_cifar: {depth: 8, width: 0.25}\n"
        "methods:\n  fitnet: {beta: {type: float, low: 1, high: 10}}\n"
    )
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    study = open_study(load_study(tiny_study), create=False)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    hp = trials[0].user_attrs["method_hyperparameters"]
    assert set(hp) == {"alpha", "beta"} and hp["alpha"] == METHODS.get("fitnet").hyperparameters["alpha"].default
    summary = (tmp_path / "reports/tiny/summary.md").read_text()
    assert "## Accuracy by method" in summary and "| `fitnet` | 2 | 2 |" in summary


def test_method_table_counts_trials_candidates_best_and_median_by_method() -> None:
    from kdnas.results._candidates import Snapshot
    from kdnas.results._report import trials_frame

    study = make_study([T("a1", 0.9, 10, method="at"), T("a2", 0.7, 20, method="at"), T("a3", 0.8, 30, method="at"),
                        T("a4", 0.0, 40, method="at", state="FAIL"), T("h1", 0.95, 10), T("c1", 0.0, 10, method="crd",
                                                                                          state="FAIL")])
    snap = Snapshot.of(study)
    lines = method_table(trials_frame(study, snap=snap), snap)
    hw = 1.6448536269514722 * (2 * 0.9 * 0.1 / 400) ** 0.5  # one replicate: binomial and seed parts alike
    assert f"| `at` | 4 | 3 | 3 | 90.0% ± {100 * hw:.1f} (1x) | 80.0% |" in lines
    assert "| `hinton` | 1 | 1 | 1 | 95.0% ± " in "\n".join(lines)
    assert "| `crd` | 1 | 0 | 0 | – | – |" in lines
    assert len([x for x in lines if x.startswith("| `")]) == 3
