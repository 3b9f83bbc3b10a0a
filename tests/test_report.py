"""The report: every file, a self-contained HTML page, effects against a same-architecture baseline,
and several studies overlaid."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from kdnas.cli import main
from kdnas.results._plots import front_2d
from tests._candidate_studies import T, make_study


def test_front_2d_marks_members_whose_interval_overlaps_a_cheaper_one() -> None:
    # Means 0.80 (cost 10), 0.95 (20), 0.85 (15), 0.97 (40): the front is 10, 15, 20, 40; 0.97's interval reaches
    # down to 0.94, under 0.95's top (0.96): not separable. 0.95 clears every cheaper member's top (0.87 at most).
    cands = pd.DataFrame({"representative": [0, 1, 2, 3], "val_accuracy_mean": [0.80, 0.95, 0.85, 0.97],
                          "val_accuracy_lo": [0.78, 0.94, 0.83, 0.94], "val_accuracy_hi": [0.82, 0.96, 0.87, 0.99],
                          "params": [10, 20, 15, 40]})
    front = front_2d(cands, "params")
    assert list(front["representative"]) == [0, 2, 1, 3]
    assert list(front["separable"]) == [True, True, True, False]


# A candidate with 3 replicates (a), two cheap front members whose intervals overlap (c, d), a dominated one (e),
# and a trial answered from a's replicates.
THREE = [T("a", 0.90, 300, test=0.88), T("a", 0.92, 300, test=0.90), T("a", 0.94, 300, test=0.92),
         T("c", 0.80, 100), T("d", 0.81, 200), T("e", 0.70, 400), T("a", 0.92, 300, reused=True)]


def _hand_estimate(values: list[float], n_val: int, ratio: float) -> tuple[float, float]:
    """Mean and 90 % half-width, by the formulas of kdnas/candidates/_estimate.py written out again."""
    k, mean = len(values), sum(values) / len(values)
    b = mean * (1 - mean) / n_val
    s2 = sum((v - mean) ** 2 for v in values) / (k - 1)
    seed_var = (2 * ratio * b + (k - 1) * s2) / (2 + k - 1)
    return mean, 1.6448536269514722 * math.sqrt(b + seed_var / k)


def test_candidates_csv_and_summary_show_mean_interval_and_replicates(tmp_path: Path) -> None:
    from kdnas.results import write_report

    files = write_report(make_study(THREE), tmp_path)
    assert tmp_path / "candidates.csv" in files
    cands = pd.read_csv(tmp_path / "candidates.csv").set_index("candidate")
    # The study's overdispersion ratio, pooled over its one replicated candidate with 2 degrees of prior at 1.
    b = 0.92 * 0.08 / 400
    ratio = (2 * 1.0 + 2 * 0.0004 / b) / 4
    mean, hw = _hand_estimate([0.90, 0.92, 0.94], 400, ratio)
    a = cands.loc["a"]
    assert a["replicates"] == 3 and a["reused_trials"] == 1 and a["trials"] == "0 1 2"
    assert a["val_accuracy_mean"] == pytest.approx(mean) and a["val_accuracy_half_width"] == pytest.approx(hw)
    assert a["val_accuracy_lo"] == pytest.approx(mean - hw) and a["val_accuracy_hi"] == pytest.approx(mean + hw)
    assert a["test_accuracy_mean"] == pytest.approx(0.90) and a["representative"] == 1  # the replicate at the mean
    assert list(cands.index) == ["a", "d", "c", "e"]  # by decreasing mean
    assert list(cands["pareto"]) == [True, True, True, False]

    summary = (tmp_path / "summary.md").read_text()
    assert f"| 1 | {mean:.1%} ± {100 * hw:.1f} | 3x (#0 #1 #2) | 90.0% ± " in summary
    assert "Trials: 7 complete (1 answered from replicates, not trained)" in summary
    assert "Candidates: 4 from 6 trainings, 1 of them replicated" in summary and f"ratio {ratio:.2f}" in summary
    # d (200 params, 81 %) cannot be told from c (100 params, 80 %); a is clear of both.
    assert "| `net_d` | `hinton()` | `direct` | not separable from #3 |" in summary
    assert "| `net_a` | `hinton()` | `direct` | yes |" in summary
    assert f"| `hinton` | 6 | 6 | 4 | {mean:.1%} ± {100 * hw:.1f} (3x) |" in summary  # the answer is no trial

    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["candidate"]) == ["a", "a", "a", "c", "d", "e", "a"]
    assert list(trials["replicate"]) == [1, 2, 3, 1, 1, 1, 3] and list(trials["reused"]) == [False] * 6 + [True]
    assert list(trials["pareto"]) == [True, True, True, True, True, False, True]  # the candidate is on the front
    page = (tmp_path / "report.html").read_text()
    assert "href='candidates.csv'" in page and f"{100 * mean:.1f}% ± {100 * hw:.1f} (3x)" in page
    assert "not separable from #3" in page


def test_hypervolume_history_is_that_of_the_front_of_means() -> None:
    """Incremental, checked against the front found from scratch after every trial; b's second replicate
    drops its mean and a, which b dominated, comes back."""
    from kdnas.costs import hypervolume, pareto_mask
    from kdnas.results._report import means_history

    keys = ["a", "b", "c", "b", "a", "c", "d"]
    points = np.array([[0.30, 0.5], [0.20, 0.5], [0.40, 0.2], [0.45, 0.5], [0.20, 0.5], [0.10, 0.2], [0.9, 0.9]])
    expected, seen = [], {}
    for key, p in zip(keys, points):
        seen.setdefault(key, []).append(p)
        means = np.array([np.mean(v, axis=0) for v in seen.values()])
        expected.append(hypervolume(means[pareto_mask(means, ["minimize"] * 2)]))
    assert means_history(keys, points) == pytest.approx(expected)
    assert expected[3] < expected[2]  # a worse mean shrinks the front: the history is not monotone


def test_effects_are_paired_differences_and_say_when_within_noise(tmp_path: Path, monkeypatch) -> None:
    from kdnas.results import _effects as effects, _plots as plots
    from kdnas.study import candidates_of

    # Architecture s1: hinton within a point of labels-only; s2: dkd 20 points above it.
    study = make_study([T("n1", 0.90, 100, method="none", student="s1"), T("n1", 0.91, 100, method="none", student="s1"),
                        T("h1", 0.905, 100, student="s1"), T("h1", 0.915, 100, student="s1"),
                        T("n2", 0.70, 200, method="none", student="s2"), T("k2", 0.90, 200, method="dkd", student="s2")])
    table = candidates_of(study)
    by_method = {g.group: g for g in effects.gains(table, "method")}
    assert set(by_method) == {"dkd", "hinton"}
    assert by_method["hinton"].overall.within_noise and by_method["hinton"].overall.mean == pytest.approx(0.005)
    assert not by_method["dkd"].overall.within_noise and by_method["dkd"].overall.lo > 0
    drawn, save = [], plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig) or save(fig, path))  # keep the figure
    plots.plot_effects(table, tmp_path / "effects.png", "s: effects")
    labels = [t.get_text() for t in drawn[0].axes[0].texts]
    assert sorted(labels) == ["+20.0", "within noise"], labels
    summary = "\n".join(effects.summary_lines(table))
    assert "| method | `hinton` | 1 | 1 | +0.5 points [" in summary and "], within noise |" in summary
    assert "| method | `dkd` | 1 | 1 | +20.0 points [" in summary and "], a gain |" in summary


def test_report_files_and_self_contained_html(tiny_study: Path, tmp_path: Path, capsys) -> None:
    space = (tmp_path / "space.yaml").read_text().replace("methods:\n", "methods:\n  none: {}\n")
    (tmp_path / "space.yaml").write_text(space)
    assert main(["search", str(tiny_study), "--trials", "5"]) == 0
    out = tmp_path / "reports/tiny"
    for name in ("trials.csv", "candidates.csv", "summary.md", "report.html", "pareto.png", "hypervolume.png",
                 "effects.png", "importances.png"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "Hypervolume over trials" in page and "Hypervolume: " in (out / "summary.md").read_text()
    assert "<script" not in page and not re.search(r"""(src|href)=["']?https?:""", page), "must open with no network"
    assert "Pareto-optimal candidates" in page and "All trials (5)" in page
    df = pd.read_csv(out / "trials.csv")
    assert {"chain", "chain_length", "reason", "macs", "candidate", "replicate", "reused", "intensify"} <= set(df.columns)
    cands = pd.read_csv(out / "candidates.csv")
    assert set(cands["candidate"]) == set(df.loc[df["state"] == "COMPLETE", "candidate"])

    # A second study, then both overlaid.
    other = tmp_path / "other.yaml"
    other.write_text(tiny_study.read_text().replace("name: tiny", "name: tiny2"))
    assert main(["search", str(other), "--trials", "2"]) == 0
    capsys.readouterr()
    assert main(["report", str(tiny_study), str(other), "--out", str(tmp_path / "both")]) == 0
    assert set(capsys.readouterr().out.split()) == {str(tmp_path / "both" / f) for f in ("trials.csv", "candidates.csv",
                                                                                          "report.html", "pareto.png")}
    both = pd.read_csv(tmp_path / "both/trials.csv")
    assert sorted(both["study"].unique()) == ["tiny", "tiny2"] and len(both) == 7
    assert sorted(pd.read_csv(tmp_path / "both/candidates.csv")["study"].unique()) == ["tiny", "tiny2"]
    assert main(["report", str(tiny_study), str(other)]) == 2  # comparing needs --out


IMPORTANCES_IN_A_FRESH_PROCESS = r"""
import sys, warnings
import optuna
from kdnas.results._report import importances

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
for _ in range(30):
    t = study.ask()
    x, c, n = t.suggest_float("x", 0, 1), t.suggest_categorical("c", ["a", "b"]), t.suggest_int("n", 0, 3)
    study.tell(t, [x + 0.3 * (c == "a"), n])
ours = importances(study)
assert ours and abs(sum(ours.values()) - 1) < 1e-9, ours
# Neither scikit-learn nor any module of optuna.importance is left behind by the report ...
assert "sklearn" not in sys.modules, "the report imported scikit-learn"
assert not [m for m in sys.modules if m.startswith("optuna.importance")]
# ... and the real package, imported afterwards, gives the same figures and still has fANOVA.
import optuna.importance
warnings.simplefilter("ignore")
assert optuna.importance.get_param_importances(study, target=lambda t: -t.values[0]) == ours
fanova = optuna.importance.FanovaImportanceEvaluator(seed=0)
assert set(optuna.importance.get_param_importances(study, evaluator=fanova, target=lambda t: t.values[0])) == {"x", "c", "n"}
print("ok")
"""


def test_importances_match_optunas_without_importing_scikit_learn() -> None:
    """`kdnas report` (and the end of every search) spent 2.4-3.4 s importing scikit-learn for evaluators it
    does not use; the figures must stay Optuna's, and the process must keep a working optuna.importance."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", IMPORTANCES_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def _measured(acc: float, params: int) -> dict:
    """A completed trial's attributes, as `kdnas search` records them (one candidate per size)."""
    return {"val_accuracy": acc, "test_accuracy": acc, "params": params, "macs": 10 * params,
            "latency_ms": params / 1000, "student": f"net{params}", "method": "hinton(alpha=0.5)", "chain": "direct",
            "chain_length": 0, "candidate": {"student": {"family": "mlp", "width": params}, "method": {"name": "hinton"}}}


def test_report_reads_one_snapshot_while_another_process_finishes_a_trial(tmp_path: Path) -> None:
    """`kdnas report` beside a running search: a trial that completed between two reads of the study made the
    front one entry longer than the table (pandas: "cannot set using a list-like indexer ...")."""
    from optuna.distributions import FloatDistribution

    from kdnas.results import write_report

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db",
                                directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "params", "latency"])
    study.set_user_attr("teacher", {"params": 1000, "macs": 10000, "latency_ms": 1.0})
    x = {"x": FloatDistribution(0, 1)}
    for i, (acc, params) in enumerate([(0.8, 100), (0.9, 300), (0.85, 200), (0.7, 400)]):
        study.add_trial(optuna.trial.create_trial(params={"x": i / 4}, distributions=x, user_attrs=_measured(acc, params),
                                                  values=[acc, params, params / 1000]))
    running = study.ask(x)  # another process's trial, still training when the report starts
    for key, value in _measured(0.95, 150).items():
        running.set_user_attr(key, value)
    read, finished = study.get_trials, []

    def get_trials(*args, **kwargs):  # the other process finishes its trial right after the report's first read
        trials = read(*args, **kwargs)
        if not finished:
            finished.append(True)
            study.tell(running, [0.95, 150, 0.15])
        return trials

    study.get_trials = get_trials
    write_report(study, tmp_path / "r")
    df = pd.read_csv(tmp_path / "r/trials.csv")
    assert list(df["state"]) == ["COMPLETE"] * 4 + ["RUNNING"] and not df["pareto"].iloc[4], "running: on no front"
    assert list(df["pareto"]) == [True, True, True, False, False]
    assert "Trials: 4 complete, 1 running" in (tmp_path / "r/summary.md").read_text()

    write_report(study, tmp_path / "r")  # the next report has it, on the front
    assert list(pd.read_csv(tmp_path / "r/trials.csv")["pareto"]) == [True, False, False, False, True]
