"""The report: every file, a self-contained HTML page, effects against a same-architecture baseline,
and several studies overlaid."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pandas as pd

from kdnas.cli import main
from kdnas.results._plots import baseline_gains, front_2d


def test_front_2d_by_hand() -> None:
    df = pd.DataFrame({"number": [0, 1, 2, 3], "val_accuracy": [0.9, 0.95, 0.85, 0.97], "params": [10, 20, 15, 40]})
    assert list(front_2d(df, "params")["number"]) == [0, 1, 3]


def test_baseline_gains_compare_the_same_architecture() -> None:
    df = pd.DataFrame({
        "state": ["COMPLETE"] * 5 + ["FAIL"],
        "student": ["A", "A", "A", "B", "C", "A"],
        "method": ["none()", "none()", "hinton(x)", "hinton(x)", "none()", "hinton(x)"],
        "val_accuracy": [0.80, 0.90, 0.91, 0.99, 0.5, None],
        "chain_length": [0, 0, 1, 0, 0, 0],
    })
    gains = baseline_gains(df)
    assert list(gains["student"]) == ["A"]  # B has no baseline; failed trials never count
    assert abs(gains["gain"].iloc[0] - 0.06) < 1e-9 and gains["method_name"].iloc[0] == "hinton"


def test_report_files_and_self_contained_html(tiny_study: Path, tmp_path: Path, capsys) -> None:
    space = (tmp_path / "space.yaml").read_text().replace("methods:\n", "methods:\n  none: {}\n")
    (tmp_path / "space.yaml").write_text(space)
    assert main(["search", str(tiny_study), "--trials", "5"]) == 0
    out = tmp_path / "reports/tiny"
    for name in ("trials.csv", "summary.md", "report.html", "pareto.png", "hypervolume.png", "effects.png",
                 "importances.png"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "Hypervolume over trials" in page and "Hypervolume: " in (out / "summary.md").read_text()
    assert "<script" not in page and not re.search(r"""(src|href)=["']?https?:""", page), "must open with no network"
    assert "Pareto-optimal trials" in page and "All trials (5)" in page
    df = pd.read_csv(out / "trials.csv")
    assert {"chain", "chain_length", "reason", "macs"} <= set(df.columns)

    # A second study, then both overlaid.
    other = tmp_path / "other.yaml"
    other.write_text(tiny_study.read_text().replace("name: tiny", "name: tiny2"))
    assert main(["search", str(other), "--trials", "2"]) == 0
    capsys.readouterr()
    assert main(["report", str(tiny_study), str(other), "--out", str(tmp_path / "both")]) == 0
    assert set(capsys.readouterr().out.split()) == {str(tmp_path / "both" / f) for f in ("trials.csv", "report.html", "pareto.png")}
    both = pd.read_csv(tmp_path / "both/trials.csv")
    assert sorted(both["study"].unique()) == ["tiny", "tiny2"] and len(both) == 7
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
    """A completed trial's attributes, as `kdnas search` records them."""
    return {"val_accuracy": acc, "test_accuracy": acc, "params": params, "macs": 10 * params,
            "latency_ms": params / 1000, "student": f"net{params}", "method": "hinton(alpha=0.5)", "chain": "direct",
            "chain_length": 0, "candidate": {"student": {"family": "mlp"}, "method": {"name": "hinton"}}}


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
