"""`kdnas fidelity`: which trials are retrained, the files and their statistics, resume after Ctrl-C, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from scipy import stats

from kdnas.cli import main
from kdnas.results import _fidelity as fidelity
from tests._candidate_studies import T, make_study
from tests._util import searched_tiny_study, write_tiny_study

ARGS = ["--top", "3", "--epochs", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-trial tiny study (module-scoped: searched once for every test here)."""
    return searched_tiny_study(tmp_path_factory.mktemp("fidelity"))


def test_spread_takes_both_ends_and_even_steps() -> None:
    items = list(range(10))
    assert fidelity.spread(items, 2) == [0, 9]
    assert fidelity.spread(items, 4) == [0, 3, 6, 9]
    assert fidelity.spread(items, 1) == [5]
    assert fidelity.spread(items, 0) == [] and fidelity.spread(items, 12) == items
    assert len(set(fidelity.spread(items, 9))) == 9


def test_selection_takes_the_front_then_a_spread_of_the_others() -> None:
    # Candidates 0 and 1 form the front; the other six are dominated, ranked 2 > 3 > ... > 7 by accuracy.
    points = [(0.9, 10), (0.95, 20), (0.85, 20), (0.8, 20), (0.75, 20), (0.7, 20), (0.65, 20), (0.6, 20)]
    study = make_study([T(f"k{i}", acc, params) for i, (acc, params) in enumerate(points)])
    chosen = fidelity.select_trials(study, 4)
    assert {c.trial.number for c in chosen if c.pareto} == {0, 1}
    assert [c.trial.number for c in chosen] == [0, 1, 2, 7]  # the front, then the best and the worst of the others
    assert [c.trial.number for c in fidelity.select_trials(study, 5)] == [0, 1, 2, 5, 7]  # positions 0, 2.5 (up), 5
    assert [c.trial.number for c in fidelity.select_trials(study, 50)] == list(range(8))


def test_selection_ranks_candidates_by_their_means_and_retrains_each_once() -> None:
    # b's best replicate (trial 2, 97 %) beats a's single one, but b's mean (89 %) does not: a is first, and b is
    # retrained once, from its replicate closest to the mean (trial 3).
    study = make_study([T("a", 0.93, 10), T("b", 0.81, 20), T("b", 0.97, 20), T("b", 0.89, 20), T("c", 0.5, 30)])
    chosen = fidelity.select_trials(study, 3)
    assert [(c.trial.number, c.entry.key, c.entry.n) for c in chosen] == [(0, "a", 1), (3, "b", 3), (4, "c", 1)]
    assert [c.pareto for c in chosen] == [True, False, False]


def test_seed_to_seed_agreement_is_the_rank_agreement_of_the_two_full_trainings() -> None:
    rows = [{"trial": n, "seed_index": i, "brief_val_accuracy": b, "full_val_accuracy": f,
             "brief_test_accuracy": b, "full_test_accuracy": f, "epochs": 30}
            for n, b, f0, f1 in [(0, 0.9, 0.95, 0.93), (1, 0.8, 0.90, 0.94), (2, 0.7, 0.85, 0.80), (3, 0.6, 0.80, 0.81)]
            for i, f in ((0, f0), (1, f1))]
    df = pd.DataFrame(rows)
    assert fidelity.seed_agreement(df.iloc[:0]) is None and fidelity.seed_agreement(df[df["seed_index"] == 0]) is None
    seeds = fidelity.seed_agreement(df)["val"]
    expected = stats.kendalltau([0.95, 0.90, 0.85, 0.80], [0.93, 0.94, 0.80, 0.81]).statistic
    assert seeds["n"] == 4 and seeds["tau"] == pytest.approx(expected) and seeds["tau"] < 1
    assert fidelity.agreement(df)["val"]["tau"] == pytest.approx(1.0)  # brief vs the first full training only
    assert "Seed against seed, the ceiling" in fidelity.summary_lines(df)[-1]
    assert "not measured (`--seeds 2`" in fidelity.summary_lines(df[df["seed_index"] == 0])[-1]


def test_interrupted_run_resumes_and_writes_consistent_files(finished: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(finished)
    calls: list[str] = []
    interrupt = [True]
    real = fidelity.train_bundle

    def counting(bundle, epochs, device, threads, say):
        calls.append(Path(bundle).name)

        def ctrl_c_in_the_second_trial(line: str) -> None:
            say(line)
            if interrupt[0] and len(calls) == 2 and line.startswith("student: epoch 1/"):
                interrupt[0] = False
                raise KeyboardInterrupt

        return real(bundle, epochs, device, threads, say=ctrl_c_in_the_second_trial)

    monkeypatch.setattr(fidelity, "train_bundle", counting)
    assert main(["fidelity", "study.yaml", *ARGS]) == 130
    assert "run the same command again to continue" in capsys.readouterr().err
    kept = pd.read_csv("reports/tiny/fidelity.csv")
    assert len(kept) == 1 and kept["full_val_accuracy"].notna().all()  # the finished trial is kept
    first_done = int(kept["trial"].iloc[0])
    assert (finished / "runs/tiny/fidelity" / calls[1] / "train/state.pt").is_file()

    first = list(calls)
    calls.clear()
    assert main(["fidelity", "study.yaml", *ARGS]) == 0
    out = capsys.readouterr().out
    assert f"done earlier: #{first_done}\n" in out and "[1/2]" in out and "student: resuming after epoch 1/2" in out
    assert calls[0] == first[1] and len(calls) == 2  # the first trial is not trained again

    calls.clear()
    assert main(["fidelity", "study.yaml", *ARGS]) == 0
    assert calls == [] and "[1/" not in capsys.readouterr().out

    df = pd.read_csv("reports/tiny/fidelity.csv")
    cands = pd.read_csv("reports/tiny/candidates.csv")
    assert len(df) == 3 and set(cands.loc[cands["pareto"], "representative"]) <= set(df["trial"])
    assert (df["epochs"] == 2).all() and df["full_val_accuracy"].between(0, 1).all() and (df["seed_index"] == 0).all()
    brief = cands.set_index("candidate").loc[df["candidate"], "val_accuracy_mean"].to_numpy()
    assert list(df["brief_val_accuracy"]) == pytest.approx(list(brief))
    tau = stats.kendalltau(df["brief_val_accuracy"], df["full_val_accuracy"]).statistic
    rho = stats.spearmanr(df["brief_val_accuracy"], df["full_val_accuracy"]).statistic
    ours = fidelity.agreement(df)["val"]
    assert -1 <= ours["tau"] <= 1 and ours["tau"] == pytest.approx(tau) and ours["rho"] == pytest.approx(rho)
    md = (finished / "reports/tiny/fidelity.md").read_text()
    assert f"{tau:.2f}" in md and "kdnas fidelity study.yaml --top 3 --epochs 2" in md
    assert (finished / "reports/tiny/fidelity.png").stat().st_size > 0

    # The study's report shows it too.
    assert main(["report", "study.yaml"]) == 0
    page = (finished / "reports/tiny/report.html").read_text()
    assert fidelity.caption(df) in page and page.count("data:image/png;base64,") == 5
    summary = (finished / "reports/tiny/summary.md").read_text()
    assert "Does brief training rank like full training?" in summary and f"Kendall tau {tau:.2f}" in summary


@pytest.mark.slow  # 3-6 more full trainings; seed_agreement itself is tested above, in the default suite
def test_a_second_seed_gives_the_seed_to_seed_ceiling(finished: Path, monkeypatch, capsys) -> None:
    """``--seeds 2``: first trainings done earlier are kept, each candidate trains once more under another seed,
    and the two full trainings' agreement is reported beside brief-vs-full."""
    monkeypatch.chdir(finished)
    calls: list[str] = []
    real = fidelity.train_bundle
    monkeypatch.setattr(fidelity, "train_bundle", lambda bundle, *a, **k: calls.append(Path(bundle).name) or real(bundle, *a, **k))
    assert main(["fidelity", "study.yaml", *ARGS]) == 0  # done earlier when the test above ran first
    calls.clear()
    assert main(["fidelity", "study.yaml", *ARGS, "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 3 and "(2nd seed)" in out and "full vs full under another seed (the ceiling)" in out
    both = pd.read_csv("reports/tiny/fidelity.csv")
    assert sorted(both["seed_index"]) == [0, 0, 0, 1, 1, 1] and both["full_val_accuracy"].notna().all()
    first, second = (both[both["seed_index"] == i].set_index("trial") for i in (0, 1))
    assert (first["seed"] != second.loc[first.index, "seed"]).all()
    ceiling = stats.kendalltau(first["full_val_accuracy"], second.loc[first.index, "full_val_accuracy"]).statistic
    md = (finished / "reports/tiny/fidelity.md").read_text()
    assert "full vs full under another seed (the ceiling)" in md
    assert (math.isnan(ceiling) and "| undefined" in md) or f"| {ceiling:.2f} (p " in md
    assert main(["report", "study.yaml"]) == 0  # the study's report shows it too
    assert "Seed against seed, the ceiling" in (finished / "reports/tiny/summary.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--top", "1"], "`top >= 2` must hold"),
    (["--top", "3", "--epochs", "0"], "`epochs >= 1` must hold"),
    (["--top", "3", "--threads", "0"], "`threads >= 1` must hold"),
    (["--top", "3", "--seeds", "3"], "`1 <= seeds <= 2` must hold"),
])
def test_bad_numbers_exit_2_and_write_nothing(finished: Path, tmp_path: Path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: whatever would be written would show up here
    assert main(["fidelity", str(finished / "study.yaml"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("kdnas: error:") == 1
    assert list(tmp_path.iterdir()) == []


def test_unknown_or_unfinished_study_exits_2_and_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    assert main(["fidelity", str(tmp_path / "missing.yaml"), "--top", "3"]) == 2
    assert main(["fidelity", str(study), "--top", "3"]) == 2
    assert "no study database" in capsys.readouterr().err
    (tmp_path / "runs/tiny").mkdir(parents=True)
    optuna.create_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db",
                        directions=["maximize", "minimize", "minimize"])
    assert main(["fidelity", str(study), "--top", "3"]) == 2
    assert "has 0 completed trials" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "space.yaml", "study.yaml"]
    assert {p.name for p in (tmp_path / "runs/tiny").iterdir()} <= {"study.db", "study.db-wal", "study.db-shm"}  # SQLite's own
