"""Reports of studies with rungs (``search.rungs``): every figure says its budget, the rankings between rungs,
and gains measured where they are true (the highest budget with both arms), with the brief budget's bias said.

Hand-made studies (trials with the attributes `kdnas search` records, in memory: milliseconds) and one tiny real
study on digits, end to end."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution

from kdnas.cli import main
from tests._candidate_studies import OBJECTIVES, T, attrs
from tests._util import DIGITS, QUICK_LATENCY, TINY_SPACE, working_dir

EPOCHS = [2, 6, 18]

# (key, student, method, params) and validation accuracy by rung, one list per run (2 runs each). Architecture
# s1: hinton gains 22 points over labels-only at 2 epochs, 1 at 18 (both went to the top). s2: 25 at 2, 11 at
# 6 (stopped there). s3: three labels-only candidates left at the first rung.
CANDIDATES = {
    ("n1", "s1", "none", 100): [[0.60, 0.84, 0.90], [0.62, 0.85, 0.91]],
    ("h1", "s1", "hinton", 100): [[0.82, 0.86, 0.91], [0.84, 0.87, 0.92]],
    ("n2", "s2", "none", 200): [[0.50, 0.70], [0.52, 0.72]],
    ("h2", "s2", "hinton", 200): [[0.75, 0.81], [0.77, 0.83]],
    ("x1", "s3", "none", 50): [[0.30], [0.31]],
    ("x2", "s3", "none", 60): [[0.35], [0.36]],
    ("x3", "s3", "none", 70): [[0.40], [0.41]],
}


AGREE = {("n1", "s1", "none", 100): [[0.60, 0.65, 0.70], [0.62, 0.67, 0.72]],
         ("h1", "s1", "hinton", 100): [[0.82, 0.87, 0.92], [0.84, 0.89, 0.94]]}


def _trial(t: T, replicate: int, rung: int | None, run: int | None, source: int | None, x: float):
    ua = attrs(t, replicate)
    if rung is not None:  # a study with rungs: every trained trial says its rung and run
        ua.update(rung=rung, epochs=EPOCHS[rung], run=run, rung_checkpoint=f"ck{run}-{rung}")
        if source is not None:
            ua["promoted_from"] = source
    else:
        ua["epochs"] = EPOCHS[0]
    return optuna.trial.create_trial(params={"x": x}, distributions={"x": FloatDistribution(0, 1)},
                                     values=[t.val, t.params, t.params / 1000], user_attrs=ua)


def rung_study(candidates: dict = CANDIDATES, rungs: bool = True) -> optuna.Study:
    """The study of ``candidates``: every run at the first rung, then the promotions, rung by rung (as ASHA orders
    them when a rung fills before the next). ``rungs=False``: the first rung's trials alone, as a flat study."""
    study = optuna.create_study(study_name="r" if rungs else "flat", directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("teacher", {"params": 10_000, "macs": 100_000, "latency_ms": 10.0, "val_accuracy": 0.99,
                                    "test_accuracy": 0.99, "spec": {"family": "big"}})
    study.set_user_attr("data", {"dataset": "fake", "train": 1000, "val": 400, "test": 400})
    if rungs:
        study.set_user_attr("comparable", {"study": {"search.rungs.epochs": EPOCHS}})
        study.set_user_attr("rungs_keep", 1 / 3)
    last: dict[tuple[str, int], int] = {}  # (key, replicate) -> the trial number of its run's latest rung
    number = itertools.count()
    for rung in range(3 if rungs else 1):
        for (key, student, method, params), runs in candidates.items():
            for rep, vals in enumerate(runs, start=1):
                if rung >= len(vals):
                    continue
                n = next(number)
                source = last.get((key, rep))
                run = n if rung == 0 else study.trials[source].user_attrs["run"]
                t = T(key, vals[rung], params, method=method, student=student)
                study.add_trial(_trial(t, rep, rung if rungs else None, run, source, (hash(key) % 97) / 100))
                last[(key, rep)] = n
    return study


def test_the_long_budgets_gain_is_reported_and_the_brief_budgets_bias_flagged(tmp_path: Path) -> None:
    from kdnas.results import _effects as effects, write_report
    from kdnas.results._candidates import Snapshot

    study = rung_study()
    snap = Snapshot.of(study)
    (hinton,) = effects.gains(snap.table, "method")
    # The group's gain is at its highest budget with both arms (s1 at 18 epochs); s2's arms met only at 6: listed
    # apart, not averaged in.
    (s1,), (s2,) = hinton.by_arch, hinton.lower
    assert s1.student == "s1" and s1.epochs == 18 and s1.diff.mean == pytest.approx(0.01)
    assert s2.student == "s2" and s2.epochs == 6 and s2.diff.mean == pytest.approx(0.11)
    # The same runs at the first rung: 22 and 25 points.
    assert s1.brief.mean == pytest.approx(0.22) and s2.brief.mean == pytest.approx(0.25)
    long, brief, delta = hinton.change()
    assert long.mean == pytest.approx(0.01) and brief.mean == pytest.approx(0.22) and delta.hi < 0
    assert hinton.budget == "18 ep"

    write_report(study, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| method | `hinton` | 18 ep | 1 | 1 | +1.0 points [" in summary
    line = next(x for x in summary.splitlines() if x.startswith("- `hinton`: at 2 epochs"))
    assert re.search(r"at 2 epochs it gained \+22\.0 points \[.*\] over labels-only, at 18 epochs \+1\.0 points "
                     r"\[.*\] \(the same runs\): the brief budget overstates it by \+21\.0 points", line), line
    line = next(x for x in summary.splitlines() if x.startswith("- `hinton`: 1 more architecture"))
    assert "both arms only at 6 epochs, +11.0 points [" in line and "left out of its gain above" in line
    assert "- `0` assistants: at 2 epochs" in summary  # chain length 0 is the same comparison

    # A gain the budget does not change (22 points at 2 epochs and at 18) is said to agree, not flagged.
    lines = effects.summary_lines(Snapshot.of(rung_study(AGREE)).table)
    assert any(x.startswith("| method | `hinton` | 18 ep | 1 | 1 | +22.0 points [") for x in lines), lines
    assert any("agrees with the longer budget's within noise" in x for x in lines)
    assert not any("overstates" in x or "understates" in x for x in lines)


def test_every_figure_says_its_budget(tmp_path: Path) -> None:
    from kdnas.bundle._export import pick
    from kdnas.cli._commands import search_summary
    from kdnas.results import compare, write_report
    from kdnas.results._candidates import Snapshot

    study = rung_study()
    # A trial answered from x1's replicates: it trained nothing, so it has no rung nor budget of its own.
    answer = T("x1", 0.305, 50, method="none", student="s3", reused=True)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                              values=[0.305, 50, 0.05], user_attrs=attrs(answer, 2)))
    write_report(study, tmp_path)
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert {"rung", "epochs", "run", "promoted_from"} <= set(trials.columns)
    assert trials["rung"].isna().tolist() == [False] * 26 + [True]
    first_n1 = trials[(trials["candidate"] == "n1") & (trials["rung"] == 1)].iloc[0]
    chain = trials[trials["run"] == first_n1["number"]].sort_values("rung")
    assert list(chain["rung"]) == [1, 2, 3] and list(chain["epochs"]) == EPOCHS
    assert pd.isna(chain["promoted_from"].iloc[0])
    assert list(chain["promoted_from"].iloc[1:]) == list(chain["number"].iloc[:2])
    # Only the trials whose figures make the front are marked: h1 at 18 epochs, not its runs' briefer ones.
    assert set(trials[trials["pareto"]]["epochs"][trials["candidate"] == "h1"]) == {18}

    cands = pd.read_csv(tmp_path / "candidates.csv").set_index("candidate")
    assert {"rung", "epochs", "val_at_2_epochs", "val_at_6_epochs", "val_at_18_epochs"} <= set(cands.columns)
    assert cands.loc["h1", "epochs"] == 18 and cands.loc["h2", "epochs"] == 6 and cands.loc["x3", "epochs"] == 2
    assert cands.loc["h1", "val_at_2_epochs"] == pytest.approx(0.83) and cands.loc["h1", "rung"] == 3
    assert pd.isna(cands.loc["h2", "val_at_18_epochs"])
    assert list(cands["epochs"]) == sorted(cands["epochs"], reverse=True)  # by budget first, then mean

    summary = (tmp_path / "summary.md").read_text()
    assert "| trial | budget | val acc |" in summary and "Rungs: budgets of 2, 6, 18 epochs, keep 1/3." in summary
    front = [x for x in summary.splitlines() if x.startswith("| ") and "`s" in x and "| yes |" in x]
    assert any("| 18 ep | 91.5% ± " in x and "`s1`" in x for x in front) and any("| 2 ep |" in x for x in front)
    assert "| `hinton` | 10 | 10 | 2 | 91.5% ± " in summary and "(2x) @18 ep |" in summary

    snap = Snapshot.of(study)
    closing = "\n".join(search_summary("r", snap))
    assert re.search(r"val 91\.5% ± \d+\.\d \(2x\) @18 ep test", closing) and "@2 ep test" in closing
    text = "\n".join(pick(study, "params<150").lines("params<150"))
    assert "val 91.5% ± " in text and "(2x) @18 ep, 100 params" in text

    page = (tmp_path / "report.html").read_text()
    assert "<h2>How rankings changed between rungs</h2>" in page and "budget (epochs)" in page
    assert "<td>0.67 (4)</td>" in page and "overstates it by" in page
    # Overlaid with a study without rungs: both studies' rows, the budget columns empty for the flat one.
    compare([study, rung_study(rungs=False)], tmp_path / "both")
    both = pd.read_csv(tmp_path / "both" / "candidates.csv")
    assert both.groupby("study")["epochs"].count().to_dict() == {"flat": 0, "r": 7}


def test_how_rankings_changed_between_rungs(tmp_path: Path) -> None:
    from kdnas.results import write_report

    write_report(rung_study(), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    # 7 candidates at 2 epochs (floor(7/3) = 2 kept, 4 went on), 4 at 6 (1 kept, 2 went on), 2 at 18. Between
    # 2 and 6 epochs h1 > h2 > n1 > n2 became h1 > n1 > h2 > n2: one discordant pair of 6, tau 4/6.
    assert "| 1 | 2 ep | 7 | 2 | 4 | – |" in summary
    assert "| 2 | 6 ep | 4 | 1 | 2 | 0.67 (4) |" in summary
    assert "| 3 | 18 ep | 2 | – | – | 1.00 (2) |" in summary
    assert re.search(r"The most accurate candidate at the first rung \(2 ep\), #\d+ \(`s1` `hinton\(\)`\), 83\.0% .*"
                     r"reached rung 3 \(18 ep\): 91\.5% .* 1st of 2 there\.", summary)
    assert re.search(r"From 2 to 6 ep the largest move among the 4 candidates at both: #\d+ \(`s1` `none\(\)`\), "
                     r"3rd -> 2nd", summary)


def test_a_study_without_rungs_reports_as_before(tmp_path: Path) -> None:
    from kdnas.cli._commands import search_summary
    from kdnas.results import write_report
    from kdnas.results._candidates import Snapshot

    study = rung_study(rungs=False)
    write_report(study, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "@" not in summary and "budget" not in summary.split("## Gain")[0] and "Rungs" not in summary
    assert "| trial | val acc | replicates |" in summary and "| by | group | architectures |" in summary
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert trials["rung"].isna().all() and trials["run"].isna().all() and set(trials["epochs"]) == {2}
    assert "rung" not in pd.read_csv(tmp_path / "candidates.csv").columns
    assert "@" not in "\n".join(search_summary("r", Snapshot.of(study)))
    assert ">rung<" not in (tmp_path / "report.html").read_text()


def test_kendall_tau_is_scipys_tau_b() -> None:
    from scipy import stats

    from kdnas.results._rungs_text import kendall_tau

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 30):
        x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)  # ties on both sides
        expected = stats.kendalltau(x, y).statistic
        assert kendall_tau(x, y) == pytest.approx(expected, nan_ok=True)
    assert np.isnan(kendall_tau([1.0], [2.0])) and np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_hypervolume_history_takes_each_candidate_at_its_highest_rung() -> None:
    from kdnas.costs import hypervolume, pareto_mask
    from kdnas.results._report import means_history

    rng = np.random.default_rng(1)
    keys = [f"k{i}" for i in rng.integers(0, 6, 60)]
    rungs = rng.integers(0, 3, 60).tolist()
    points = np.column_stack([rng.uniform(0, 1, 60), [int(k[1:]) / 6 for k in keys]])
    points[:, 1] += 0.01  # a key's cost is fixed; its accuracy coordinate moves
    got = means_history(keys, points, rungs)
    for n in range(60):  # the definition: each key's mean over its points at its highest rung so far
        top = {}
        for k, r in zip(keys[:n + 1], rungs[:n + 1]):
            top[k] = max(top.get(k, r), r)
        means = [points[[i for i in range(n + 1) if keys[i] == k and rungs[i] == r]].mean(axis=0)
                 for k, r in top.items()]
        front = np.array([m for m, keep in zip(means, pareto_mask(means, ["minimize"] * 2)) if keep])
        assert got[n] == pytest.approx(hypervolume(front)), n


@pytest.mark.slow  # the default suite's real rung study is tests/test_rungs.py's (its report checked there)
def test_a_tiny_real_study_with_rungs_end_to_end(tmp_path: Path, capsys) -> None:
    """Digits, a small teacher, rungs of 1, 2, 3 epochs: the search's closing lines and its report say budgets."""
    (tmp_path / "space.yaml").write_text(TINY_SPACE.replace("methods:\n", "methods:\n  none: {}\n"))
    study = tmp_path / "study.yaml"
    study.write_text(f"""\
name: tiny
seed: 0
threads: 1
data: {DIGITS}
teacher:
  arch: {{family: plain_cnn, channels: [8, 16]}}
  train: {{epochs: 1, lr: 0.1}}
student:
  train: {{lr: 0.1}}
search:
  space: space.yaml
  trials: 6
  sampler: random
  rungs: {{epochs: [1, 2, 3], keep: 0.5}}
objectives: [accuracy, params, latency]
costs: {{latency: {QUICK_LATENCY}}}
""")
    with working_dir(tmp_path):
        assert main(["search", str(study)]) == 0
    out = capsys.readouterr().out
    assert "rung 2/3 (2 ep)" in out, out
    closing = out.split("trainings,")[1]
    assert re.search(r"val \d+\.\d% ± \d+\.\d \(\dx\) @\d ep test", closing), closing
    report = tmp_path / "reports" / "tiny"
    summary = (report / "summary.md").read_text()
    assert "## How rankings changed between rungs" in summary and "| 1 | 1 ep |" in summary
    trials = pd.read_csv(report / "trials.csv")
    assert trials["rung"].max() >= 2 and trials["promoted_from"].notna().any()
    assert {"val_at_1_epochs", "val_at_3_epochs"} <= set(pd.read_csv(report / "candidates.csv").columns)
