"""The report of a study whose teacher is searched too (issue #27): the teacher of every trial and candidate, the
gain over labels-only by teacher, teacher against teacher over twin candidates, and the distillation efficiency.

Hand-made studies (trials with the attributes `kdnas search` records, in memory: milliseconds) whose paired
differences are known by construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution

from kdnas.candidates import difference, estimate, mean_difference
from kdnas.costs import ScoreConfig, distillation_efficiency
from tests._candidate_studies import OBJECTIVES, T, make_study

BIG = {"params": 10_000, "macs": 100_000, "latency_ms": 10.0, "val_accuracy": 0.99, "test_accuracy": 0.98,
       "spec": {"family": "big"}, "cache_key": "k-big", "identity": "k-big"}
SMALL = {"params": 2_000, "macs": 20_000, "latency_ms": 2.0, "val_accuracy": 0.95, "test_accuracy": 0.94,
         "spec": {"family": "small"}, "cache_key": "k-small", "identity": "k-small"}
ENSEMBLE = {"params": 12_000, "macs": 120_000, "latency_ms": 12.0, "val_accuracy": 0.995, "test_accuracy": 0.99,
            "members": ["big", "small"], "identity": "k-ens"}
# The reference teacher, `big`, is declared first in the study file; the space lists its choices in another order,
# and the study records them in the space's order (`big` is no first there): the report puts the reference first.
SPACE = ["small", "big+small", "big"]
TEACHERS = {"small": SMALL, "big+small": ENSEMBLE, "big": BIG}
ORDER = ["big", "small", "big+small"]  # the reference first, then the space's order
CHAIN = {"mode": "takd", "assistants": [{"family": "mid"}]}


@dataclass
class C:
    """A candidate: its student, method, teacher choice (None: labels only), chain, and one accuracy per replicate."""

    student: str
    method: str
    teacher: str | None
    vals: list[float]
    chain: dict = field(default_factory=dict)
    params: int = 100


def _attrs(c: C, replicate: int, val: float, score: ScoreConfig) -> dict:
    cand = {"student": {"family": c.student}, "method": {"name": c.method}, **({"chain": c.chain} if c.chain else {}),
            **({"teacher": c.teacher} if c.teacher else {})}
    costs = {"params": c.params, "macs": 10 * c.params, "latency_ms": c.params / 1000}
    key = f"{c.student}-{c.method}-{c.teacher}-{bool(c.chain)}"
    ua = {"candidate_key": key, "replicate": replicate, "seed": replicate, "val_accuracy": val, "test_accuracy": val,
          **costs, "student": c.student, "method": f"{c.method}()", "chain": "takd[1]" if c.chain else "direct",
          "chain_length": 1 if c.chain else 0, "candidate": cand}
    if c.teacher:
        ua["teacher_name"] = c.teacher
    # What the search records: the metric against the trial's teacher (labels-only: the reference, `big`).
    ua.update(distillation_efficiency(val, costs, TEACHERS[c.teacher or "big"], OBJECTIVES, score))
    return ua


def teacher_study(cands: list[C], score: ScoreConfig = ScoreConfig(), space: list[str] = SPACE) -> optuna.Study:
    study = optuna.create_study(study_name="t", directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("teacher", BIG)
    study.set_user_attr("teachers", TEACHERS)  # the choices, then the reference and members not sampled alone
    study.set_user_attr("comparable", {"study": {}, "space": {"teachers": space}})
    study.set_user_attr("data", {"dataset": "fake", "train": 1000, "val": 400, "test": 400})
    dist = {"x": FloatDistribution(0, 1)}
    for i, c in enumerate(cands):
        for rep, v in enumerate(c.vals, start=1):
            study.add_trial(optuna.trial.create_trial(params={"x": i / 100}, distributions=dist,
                                                      values=[v, c.params, c.params / 1000],
                                                      user_attrs=_attrs(c, rep, v, score)))
    return study


# Architecture s1: hinton under `small` 4 points above its twin under `big`, dkd alike under both: s1's
# difference is +2. s2: hinton under `small` 10 points below. Over the architectures: (2 - 10) / 2 = -4 points.
# A chain under `small` has no twin under `big`: left out. The ensemble has no twin at all.
CANDS = [
    C("s1", "none", None, [0.85, 0.87]), C("s2", "none", None, [0.50, 0.52], params=200),
    C("s1", "hinton", "big", [0.90, 0.92]), C("s1", "hinton", "small", [0.94, 0.96]),
    C("s1", "dkd", "big", [0.80]), C("s1", "dkd", "small", [0.80]),
    C("s2", "hinton", "big", [0.70, 0.72], params=200), C("s2", "hinton", "small", [0.60, 0.62], params=200),
    C("s1", "hinton", "small", [0.99], chain=CHAIN), C("s2", "dkd", "big+small", [0.75], params=200),
]


def test_teacher_against_teacher_is_paired_over_twins() -> None:
    from kdnas.results._teacher_effects import teacher_gains
    from kdnas.study import candidates_of

    table = candidates_of(teacher_study(CANDS))
    (small,) = teacher_gains(table, ORDER)  # the ensemble has no twin of a `big` candidate
    assert small.group == "small" and small.candidates == 3  # three twin pairs: the chain pairs with nothing
    s1, s2 = small.by_arch
    assert (s1.student, s1.candidates, s2.student, s2.candidates) == ("s1", 2, "s2", 1)
    assert s1.diff.mean == pytest.approx(0.02) and s2.diff.mean == pytest.approx(-0.10)
    assert small.overall.mean == pytest.approx(-0.04)
    # The interval: each pair's seed errors, averaged per architecture, then over the architectures.
    e = {k: x.estimate for k, x in table.entries.items()}
    pair = lambda s, m: difference(e[f"{s}-{m}-small-False"], e[f"{s}-{m}-big-False"])  # noqa: E731
    want = mean_difference([mean_difference([pair("s1", "hinton"), pair("s1", "dkd")]), pair("s2", "hinton")])
    assert small.overall.se == pytest.approx(want.se) and small.overall.se > 0
    assert teacher_gains(table, ["big"]) == []  # one teacher choice: nothing to compare


def test_gain_over_labels_only_by_teacher() -> None:
    from kdnas.results import _effects as effects
    from kdnas.study import candidates_of

    table = candidates_of(teacher_study(CANDS))
    by = {g.group: g for g in effects.gains(table, "teacher", ORDER)}
    assert list(by) == ORDER
    # big: s1 (0.91 + 0.80) / 2 - 0.86, s2 0.71 - 0.51; small: s1 (0.95 + 0.80 + 0.99) / 3 - 0.86, s2 0.61 - 0.51.
    assert by["big"].overall.mean == pytest.approx(((0.855 - 0.86) + 0.20) / 2)
    assert by["small"].overall.mean == pytest.approx(((0.95 + 0.80 + 0.99) / 3 - 0.86 + 0.10) / 2)
    assert by["big+small"].overall.mean == pytest.approx(0.75 - 0.51)
    lines = effects.summary_lines(table, ORDER)
    assert any(x.startswith("| teacher | `big+small` | 1 | 1 | +24.0 points [") for x in lines), lines
    assert not any(x.startswith("| teacher |") for x in effects.summary_lines(table, ["big"]))


def test_report_files_show_the_teacher_and_the_efficiency(tmp_path: Path, monkeypatch) -> None:
    from kdnas.results import _plots as plots, write_report

    drawn, save = [], plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append((path.name, fig)) or save(fig, path))
    write_report(teacher_study(CANDS), tmp_path)

    trials = pd.read_csv(tmp_path / "trials.csv")
    assert trials["teacher_name"].isna().sum() == 4  # the labels-only trials learned from no teacher
    row = trials[(trials["student"] == "s1") & (trials["teacher_name"] == "small")].iloc[0]
    assert row["retained"] == pytest.approx(row["val_accuracy"] / 0.95)
    assert row["compression_params"] == pytest.approx(20) and row["compression_latency"] == pytest.approx(20)

    cands = pd.read_csv(tmp_path / "candidates.csv").set_index("candidate")
    c = cands.loc["s1-hinton-small-False"]
    assert c["teacher_name"] == "small" and c["retained"] == pytest.approx(0.95 / 0.95)
    want = distillation_efficiency(0.95, {"params": 100, "macs": 1000, "latency_ms": 0.1}, SMALL, OBJECTIVES,
                                   ScoreConfig())
    assert c["efficiency"] == pytest.approx(want["efficiency"]) and c["compression_macs"] == pytest.approx(20)
    # kd_gain: against the pooled labels-only candidate of its student, with its 90 % interval.
    base = estimate([0.85, 0.87], 400, _ratio(cands))
    own = estimate([0.94, 0.96], 400, _ratio(cands))
    assert c["kd_gain"] == pytest.approx(0.95 - 0.86)
    assert c["kd_gain_hi"] - c["kd_gain"] == pytest.approx(difference(own, base).hi - difference(own, base).mean)
    labels_only = cands.loc["s1-none-None-False"]
    assert pd.isna(labels_only["teacher_name"]) and pd.isna(labels_only["kd_gain"])
    assert labels_only["retained"] == pytest.approx(0.86 / 0.99)  # against the reference teacher

    summary = (tmp_path / "summary.md").read_text()
    teacher = next(x for x in summary.splitlines() if x.startswith("Teacher:"))
    assert "3 choices, sampled per distilled trial: `big` (10,000 params" in teacher  # the reference first
    assert "`big+small` (ensemble of `big`, `small`; 12,000 params" in teacher
    assert "`small` (2,000 params, 20,000 MACs, val 95.0%" in teacher and "The reference teacher is `big`" in teacher
    assert "Not sampled alone" not in teacher
    assert "| chain | teacher | separable |" in summary and "| `takd[1]` | `small` | yes |" in summary
    assert "## Teacher against teacher (same candidate, paired)" in summary
    assert "| `small` | `big` | 2 | 3 | -4.0 points [" in summary
    assert "## Distillation efficiency" in summary and "docs/costs.md" in summary
    line = next(x for x in summary.splitlines() if x.startswith("| ") and "`s2` | `hinton()`" in x and "`small`" in x)
    assert "| 64.2% |" in line and "| 10.0x | 10.0x |" in line and "| +10.0 [" in line and "(2x vs 2x)" in line
    html = (tmp_path / "report.html").read_text()
    assert "Teacher against teacher" in html and "<th class=\"text\">teacher</th>" in html

    fig = dict(drawn)["effects.png"]
    assert len(fig.axes) == 4
    assert [t.get_text() for t in fig.axes[3].texts] == ["-4.0"] or fig.axes[3].texts[0].get_text() == "within noise"
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()][0].startswith("small\n(2 arch., 3 pairs)")


def _ratio(cands: pd.DataFrame) -> float:
    """The study's overdispersion ratio, read back from a candidate's standard error (one replicate: se^2 = b (1 +
    ratio))."""
    one = cands[cands["replicates"] == 1].iloc[0]
    p = one["val_accuracy_mean"]
    b = p * (1 - p) / 400
    return one["val_accuracy_se"] ** 2 / b - 1


def test_a_reference_teacher_not_sampled_alone_leaves_the_first_choice_to_compare_with(tmp_path: Path) -> None:
    """The space samples `small` and the ensemble `big+small`, not `big` alone: the ensemble is compared with
    `small`, and labels-only students are still rated against the reference, `big`."""
    from kdnas.results import write_report

    study = teacher_study([C("s1", "none", None, [0.85, 0.87]), C("s1", "hinton", "small", [0.90, 0.92]),
                           C("s1", "hinton", "big+small", [0.95, 0.97])], space=["small", "big+small"])
    write_report(study, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    teacher = next(x for x in summary.splitlines() if x.startswith("Teacher:"))
    assert "2 choices, sampled per distilled trial: `small` (" in teacher and "Not sampled alone: `big` (" in teacher
    assert "| `big+small` | `small` | 1 | 1 | +5.0 points [" in summary
    assert "the first teacher choice (the reference teacher, `big`, is not sampled alone)" in summary
    cands = pd.read_csv(tmp_path / "candidates.csv").set_index("candidate")
    assert cands.loc["s1-none-None-False", "retained"] == pytest.approx(0.86 / 0.99)


def test_the_candidates_efficiency_uses_the_exponents_the_search_used(tmp_path: Path) -> None:
    """A pareto study's score exponents are not recorded: the candidate's efficiency takes its replicates' factor."""
    from kdnas.results._candidates import Snapshot

    steep = ScoreConfig(below=-0.2, above=-0.2)
    cands = Snapshot.of(teacher_study(CANDS, steep)).candidates().set_index("candidate")
    c = cands.loc["s2-hinton-big-False"]
    want = distillation_efficiency(0.71, {"params": 200, "macs": 2000, "latency_ms": 0.2}, BIG, OBJECTIVES, steep)
    assert c["efficiency"] == pytest.approx(want["efficiency"])
    assert c["efficiency"] == pytest.approx(0.71 / 0.99 * 50 ** 0.4)  # params and latency each 50x smaller


def test_a_single_teacher_study_reports_as_before_with_the_efficiency(tmp_path: Path) -> None:
    """An old study: no `teachers`, no `teacher_name`, no metric on its trials. Its teacher is `teacher`, its
    metric is computed from its trials, and no teacher section is shown."""
    from kdnas.results import write_report

    study = make_study([T("n1", 0.80, 100, method="none", student="s1"), T("n1", 0.82, 100, method="none", student="s1"),
                        T("h1", 0.90, 100, student="s1"), T("h1", 0.92, 100, student="s1")])
    write_report(study, tmp_path)
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["teacher_name"].fillna("")) == ["", "", "teacher", "teacher"]
    assert trials["retained"].tolist() == pytest.approx([0.80 / 0.99, 0.82 / 0.99, 0.90 / 0.99, 0.92 / 0.99])
    eff = distillation_efficiency(0.90, {"params": 100, "macs": 1000, "latency_ms": 0.1}, study.user_attrs["teacher"],
                                  OBJECTIVES, ScoreConfig())["efficiency"]
    assert trials["efficiency"][2] == pytest.approx(eff) and eff == pytest.approx(0.90 / 0.99 * 100 ** 0.14)
    cands = pd.read_csv(tmp_path / "candidates.csv").set_index("candidate")
    assert cands.loc["h1", "kd_gain"] == pytest.approx(0.10) and cands.loc["h1", "teacher_name"] == "teacher"
    summary = (tmp_path / "summary.md").read_text()
    assert "Teacher: `{\"family\": \"big\"}`" in summary
    assert "Teacher against teacher" not in summary and "| teacher |" not in summary
    assert "## Distillation efficiency" in summary and "| +10.0 [" in summary
    assert "<th class=\"text\">teacher</th>" not in (tmp_path / "report.html").read_text()


def test_teacher_against_teacher_with_rungs_at_the_highest_budget_both_twins_reached() -> None:
    """s1's twins went to 6 epochs: `small` 20 points above `big` at 2 epochs, 1 at 6. The report gives 1, at 6
    epochs, and says the brief budget overstated it."""
    from kdnas.results._candidates import Snapshot
    from kdnas.results._teacher_effects import section_lines, teacher_gains

    study = optuna.create_study(study_name="r", directions=["maximize", "minimize", "minimize"])
    for k, v in {"objectives": OBJECTIVES, "teacher": BIG, "teachers": {"big": BIG, "small": SMALL},
                 "data": {"dataset": "fake", "train": 1000, "val": 400, "test": 400},
                 "comparable": {"study": {"search.rungs.epochs": [2, 6]}}}.items():
        study.set_user_attr(k, v)
    runs = {"big": [[0.60, 0.90], [0.62, 0.92]], "small": [[0.80, 0.91], [0.82, 0.93]]}
    number = 0
    for rung in (0, 1):
        for name, values in runs.items():
            for rep, vals in enumerate(values):
                ua = _attrs(C("s1", "hinton", name, []), rep + 1, vals[rung], ScoreConfig())
                run = 2 * (name == "small") + rep  # the trials of rung 0 are numbered 0-3 in this order
                ua.update(rung=rung, epochs=[2, 6][rung], run=run, **({"promoted_from": run} if rung else {}))
                study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                                          values=[vals[rung], 100, 0.1], user_attrs=ua))
                number += 1
    snap = Snapshot.of(study)
    (small,) = teacher_gains(snap.table, ["big", "small"])
    (s1,) = small.by_arch
    assert s1.epochs == 6 and s1.diff.mean == pytest.approx(0.01) and s1.brief.mean == pytest.approx(0.20)
    assert small.budget == "6 ep"
    lines = section_lines(snap.table, ["big", "small"])
    assert any(x.startswith("| `small` | `big` | 6 ep | 1 | 1 | +1.0 points [") for x in lines), lines
    line = next(x for x in lines if x.startswith("- `small` teacher: at 2 epochs"))
    assert "gained +20.0 points [" in line and "over `big`, at 6 epochs +1.0 points" in line and "overstates" in line
    assert math.isfinite(small.overall.se)


def test_fidelity_lists_the_teacher_only_where_there_is_a_choice() -> None:
    from kdnas.results._fidelity import COLUMNS
    from kdnas.results._fidelity_text import markdown

    rows = [dict.fromkeys(COLUMNS) | {"trial": n, "seed_index": 0, "pareto": n == 1, "brief_val_accuracy": v,
                                      "full_val_accuracy": v + 0.01, "brief_test_accuracy": v, "full_test_accuracy": v,
                                      "params": 100, "student": "s", "method": "hinton()", "chain": "direct",
                                      "teacher_name": t, "epochs": 10}
            for n, v, t in ((1, 0.9, "small"), (2, 0.8, None), (3, 0.7, "big+small"))]
    text = markdown(pd.DataFrame(rows, columns=COLUMNS), "t", "kdnas fidelity", 3, 3)
    assert "| chain | teacher | epochs |" in text
    assert "| `direct` | `small` | 10 |" in text and "| `direct` | labels only | 10 |" in text
    single = pd.DataFrame([r | {"teacher_name": "teacher" if r["teacher_name"] else None} for r in rows])
    assert "| teacher |" not in markdown(single, "t", "kdnas fidelity", 3, 3)


E2E_SPACE = """\
students:
  plain_cnn: {channels: {type: categorical, choices: [[4, 8]]}, pool_every: 1}
methods:
  none: {}
  hinton: {temperature: 4.0, alpha: 0.9}
teachers: [small, big, [small, big]]
"""


def test_a_tiny_real_study_of_two_teachers_end_to_end(tmp_path: Path, capsys) -> None:
    """Digits, two small teachers and their ensemble, one student and one method: every choice is sampled, so the
    report has twins to pair, and every figure it shows is checked against the stored trials."""
    from kdnas.cli import main
    from tests._util import DIGITS, QUICK_LATENCY, working_dir

    (tmp_path / "space.yaml").write_text(E2E_SPACE)
    (tmp_path / "study.yaml").write_text(f"""\
name: two
seed: 0
threads: 1
data: {DIGITS}
teachers:
  big: {{arch: {{family: plain_cnn, channels: [16, 32], pool_every: 1}}, train: {{epochs: 1, lr: 0.1}}}}
  small: {{arch: {{family: plain_cnn, channels: [8, 16], pool_every: 1}}, train: {{epochs: 1, lr: 0.1}}}}
student:
  train: {{epochs: 1, lr: 0.1}}
search:
  space: space.yaml
  trials: 10
  sampler: random
objectives: [accuracy, params, latency]
costs: {{latency: {QUICK_LATENCY}}}
""")
    with working_dir(tmp_path):
        assert main(["search", "study.yaml"]) == 0
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{tmp_path}/runs/two/study.db")
    infos = study.user_attrs["teachers"]
    report = tmp_path / "reports" / "two"
    trials = pd.read_csv(report / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    distilled = done[done["method"] != "none()"]
    assert set(distilled["teacher_name"]) == {"big", "small", "big+small"} and done["teacher_name"].isna().any()
    teacher = done["teacher_name"].fillna("big")  # labels-only: against the reference, the first declared
    assert done["retained"].tolist() == pytest.approx(
        (done["val_accuracy"] / teacher.map(lambda t: infos[t]["val_accuracy"])).tolist())
    assert done["compression_params"].tolist() == pytest.approx(
        (teacher.map(lambda t: infos[t]["params"]) / done["params"]).tolist())

    cands = pd.read_csv(report / "candidates.csv").set_index("teacher_name", drop=False)
    assert set(cands["teacher_name"].dropna()) == {"big", "small", "big+small"} and len(cands) == 4
    labels_only = cands[cands["teacher_name"].isna()].iloc[0]
    for t in ("big", "small", "big+small"):
        assert cands.loc[t, "kd_gain"] == pytest.approx(cands.loc[t, "val_accuracy_mean"]
                                                        - labels_only["val_accuracy_mean"])
        assert cands.loc[t, "retained"] == pytest.approx(cands.loc[t, "val_accuracy_mean"] / infos[t]["val_accuracy"])

    summary = (report / "summary.md").read_text()
    assert "Teacher: 3 choices, sampled per distilled trial: `big` (" in summary  # the reference first
    for t in ("small", "big+small"):
        diff = 100 * (cands.loc[t, "val_accuracy_mean"] - cands.loc["big", "val_accuracy_mean"])
        assert f"| `{t}` | `big` | 1 | 1 | {diff:+.1f} points [" in summary, summary
    assert "## Distillation efficiency" in summary and "| teacher | `big+small` | 1 | 1 |" in summary
    assert (report / "effects.png").stat().st_size > 0

    # The ensemble trial's bundle carries both members and trains on its own (tests/test_teachers.py does the
    # same, slow, on a study of three teachers searched by two commands at once).
    ens = int(done[done["teacher_name"] == "big+small"]["number"].iloc[0])
    out = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "study.yaml"), "--trial", str(ens), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "guides").iterdir()) == ["teacher-big.pt", "teacher-small.pt"]
    assert main(["train", str(out), "--epochs", "1"]) == 0
    # A changed teacher is refused on resume, before anything is trained.
    changed = tmp_path / "changed.yaml"
    changed.write_text((tmp_path / "study.yaml").read_text().replace("[8, 16], pool_every: 1}, train: {epochs: 1",
                                                                     "[8, 16], pool_every: 1}, train: {epochs: 2"))
    capsys.readouterr()
    assert main(["search", str(changed), "--trials", "1"]) == 2
    assert "teachers.small.train.epochs" in capsys.readouterr().err
