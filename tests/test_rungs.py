"""Rungs (``search.rungs``): the promotion rule on hand-made fronts, and a real study whose promoted runs continue
their checkpoints and end bit for bit as an uninterrupted run of the longer budget."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution

from kdnas.candidates import Ladder, crowding, kept_count, nondominated_ranks, rank
from kdnas.cli import main
from kdnas.config import load_study
from kdnas.study import make_objective, prepare
from kdnas.study._liveness import retry_trial
from tests._util import DIGITS, QUICK_LATENCY, stored_trials, working_dir

# --- the rule, on hand-made candidates ---------------------------------------------------------------------------


def trial(number: int, key: str, val: float, params: int, rung: int = 0, run: int | None = None,
          promoted_from: int | None = None, state: str = "COMPLETE") -> optuna.trial.FrozenTrial:
    ua = {"candidate_key": key, "val_accuracy": val, "params": params, "macs": params, "latency_ms": params / 1e3,
          "rung": rung, "run": number if run is None else run, "seed": number, "student": key, "method": "m",
          "chain": "direct"}
    if promoted_from is not None:
        ua["promoted_from"] = promoted_from
    t = optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                  values=[val, params] if state == "COMPLETE" else None,
                                  state=optuna.trial.TrialState[state], user_attrs=ua)
    t.number = number
    return t


def ladder(trials, keep: float = 0.5, epochs=(1, 3, 9)) -> Ladder:
    return Ladder(400, ["accuracy", "params"], None, epochs, keep).update(trials)


def test_fronts_and_crowding_by_hand() -> None:
    # minimised: (-accuracy, params)
    pts = np.array([[-0.9, 100], [-0.8, 50], [-0.7, 200], [-0.95, 500], [-0.6, 300]])
    assert nondominated_ranks(pts).tolist() == [0, 0, 1, 0, 2]
    front = pts[[0, 1, 3]]
    d = crowding(front)
    assert np.isinf(d[1]) and np.isinf(d[2]) and np.isfinite(d[0])  # the ends of the front span it
    assert kept_count(9, 1 / 3) == 3 and kept_count(2, 1 / 3) == 0  # floor, robust to 9 * (1/3) = 2.999...


def test_a_new_non_dominated_candidate_is_kept_and_dominated_ones_are_not() -> None:
    # A: 0.90 at 100 params; B: 0.80 at 50; C, D, E dominated by A. Then F, newest, beats everything on accuracy.
    base = [trial(0, "A", 0.90, 100), trial(1, "B", 0.80, 50), trial(2, "C", 0.70, 200), trial(3, "D", 0.60, 300),
            trial(4, "E", 0.50, 400)]
    lad = ladder(base)
    assert {e.key for e in lad.kept(0)} == {"A", "B"}  # floor(5 / 2) = 2: the front of two
    lad = ladder(base + [trial(5, "F", 0.95, 500)])
    kept = [e.key for e in lad.kept(0)]
    assert len(kept) == 3 and set(kept) == {"A", "B", "F"}  # the front fits the share: nobody on it is stopped
    assert not {"C", "D", "E"} & set(kept)
    # Promotions walk the kept candidates in rank order (ends of the front first, then by key), one run each.
    order = []
    trials = base + [trial(5, "F", 0.95, 500)]
    for n in range(6, 10):
        p = ladder(trials).next_promotion()
        if p is None:
            break
        order.append(p.entry.key)
        trials.append(trial(n, p.entry.key, 0.5, 1, rung=1, run=p.source, promoted_from=p.source, state="WAITING"))
    assert order == ["B", "F", "A"]


def test_ties_resolve_by_key_whatever_the_order_trials_finished_in() -> None:
    same = [("K3", 0.9, 100), ("K1", 0.9, 100), ("K2", 0.9, 100), ("K0", 0.5, 900)]
    results = set()
    for seed in range(5):
        order = same[:]
        random.Random(seed).shuffle(order)
        lad = ladder([trial(i, k, v, p) for i, (k, v, p) in enumerate(order)])
        results.add(tuple(e.key for e in lad.ranking(0)))
    assert len(results) == 1 and next(iter(results))[-1] == "K0"  # one order, whatever the finishing order
    assert rank(["b", "a"], np.array([[1.0, 1.0], [1.0, 1.0]])) == [1, 0]


def test_the_highest_rung_promotes_first_and_a_run_goes_on_once() -> None:
    trials = [trial(i, k, v, p) for i, (k, v, p) in enumerate([("A", 0.9, 100), ("B", 0.8, 50), ("C", 0.7, 300),
                                                                ("D", 0.6, 400)])]
    # A and B went on to rung 1 (promoted, done); the rung-1 table has two candidates: floor(2 * 0.5) = 1 kept.
    trials += [trial(4, "A", 0.95, 100, rung=1, run=0, promoted_from=0),
               trial(5, "B", 0.85, 50, rung=1, run=1, promoted_from=1)]
    p = ladder(trials).next_promotion()
    assert p.rung == 2 and p.source in (4, 5)  # rung 1 -> 2 before anything at rung 0
    trials.append(trial(6, p.entry.key, 0.5, 1, rung=2, run=p.entry.runs[0], promoted_from=p.source, state="RUNNING"))
    assert ladder(trials).next_promotion() is None  # rung 0 keeps 2 (A, B): both went on already


def test_a_kept_distilled_candidate_takes_its_labels_only_twin_along() -> None:
    def t(number, key, val, params, method, student):
        tr = trial(number, key, val, params)
        tr.set_user_attr("candidate", {"student": {"family": student}, "method": {"name": method}})
        return tr

    # Student s1 with KD is the best; its labels-only twin is far behind (a brief figure: KD converges faster).
    trials = [t(0, "kd1", 0.95, 100, "hinton", "s1"), t(1, "none1", 0.60, 100, "none", "s1"),
              t(2, "kd2", 0.70, 300, "hinton", "s2"), t(3, "none2", 0.65, 300, "none", "s2")]
    assert [e.key for e in ladder(trials, keep=0.25).kept(0)] == ["kd1"]
    p = ladder(trials, keep=0.25).next_promotion()
    assert p.entry.key == "kd1"
    trials.append(trial(4, "kd1", 0.5, 1, rung=1, run=0, promoted_from=0, state="WAITING"))
    p = ladder(trials, keep=0.25).next_promotion()
    assert p.entry.key == "none1" and p.source == 1  # the twin, though it is not kept on its own figure
    trials.append(trial(5, "none1", 0.5, 1, rung=1, run=1, promoted_from=1, state="WAITING"))
    assert ladder(trials, keep=0.25).next_promotion() is None
    off = Ladder(400, ["accuracy", "params"], None, (1, 3, 9), 0.25, baselines=False).update(trials[:5])
    assert off.next_promotion() is None


def test_a_kept_distilled_candidate_without_a_labels_only_twin_gets_one_started() -> None:
    from kdnas.candidates import twin_params

    def t(number, key, val, params, method, student):
        tr = trial(number, key, val, params)
        tr.set_user_attr("candidate", {"student": {"family": student}, "method": {"name": method}})
        tr.params = {"student.family": student, "method": method, f"method.{method}.alpha": 0.5}
        return tr

    trials = [t(0, "kd1", 0.95, 100, "hinton", "s1"), t(1, "kd2", 0.70, 300, "hinton", "s2"),
              t(2, "none2", 0.65, 300, "none", "s2")]
    lad = ladder(trials, keep=0.34)
    assert [e.key for e in lad.kept(0)] == ["kd1"]
    (need,) = lad.missing_twins()  # s1 was never trained on labels only
    assert need.key == "kd1" and twin_params(need.params) == {"student.family": "s1", "method": "none"}
    started = trial(3, "?", 0.0, 1, state="WAITING")
    started.set_user_attr("twin_of", "kd1")
    assert ladder(trials + [started], keep=0.34).missing_twins() == []  # asked for once
    assert twin_params({"student.family": "s1"}) is None  # a space of one method has no labels-only twin


def test_fronts_compare_two_candidates_at_the_highest_budget_both_reached() -> None:
    # X climbed to rung 1 (0.95 there, 0.80 at rung 0); Y stayed at rung 0 with 0.85 and fewer parameters;
    # Z stayed at rung 0 with 0.70 and more parameters than X.
    trials = [trial(0, "X", 0.80, 100), trial(1, "Y", 0.85, 50), trial(2, "Z", 0.70, 200),
              trial(3, "X", 0.95, 100, rung=1, run=0, promoted_from=0)]
    view = ladder(trials).view()
    assert {e.key: e.rung for e in view.estimates()} == {"X": 1, "Y": 0, "Z": 0}
    # At rung 0 (the only budget X and Y share) Y beats X on both: X is off the front until Y climbs too.
    assert [e.key for e in view.front()] == ["Y"]
    trials.append(trial(4, "Y", 0.90, 50, rung=1, run=1, promoted_from=1))
    view = ladder(trials).view()
    assert [e.key for e in view.front()] == ["Y", "X"]  # at rung 1: X more accurate, Y smaller
    rows = {r["candidate"]: r for r in view.rows()}
    assert rows["X"]["epochs"] == 3 and rows["X"]["val_at_1_epochs"] == pytest.approx(0.80)
    assert rows["Z"]["rung"] == 1 and rows["Z"]["val_at_3_epochs"] is None


def test_a_retried_promotion_is_retried_as_a_promotion() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(trial(0, "A", 0.9, 100))
    failed = trial(1, "A", 0.9, 100, rung=1, run=0, promoted_from=0, state="FAIL")
    failed.set_user_attr("rung_checkpoint", "abc")
    study.add_trial(failed)
    number = retry_trial(study, study.trials[1], max_retry=1)
    ua = study.trials[number].user_attrs
    assert ua["promoted_from"] == 0 and ua["rung"] == 1 and ua["run"] == 0 and ua["rung_checkpoint"] == "abc"
    assert ua["seed"] == 1 and "val_accuracy" not in ua


# --- a real study -------------------------------------------------------------------------------------------------

SPACE = """\
students:
  plain_cnn: {channels: {type: categorical, choices: [[4, 8], [8, 16], [4, 8, 8]]}, pool_every: 1, kernel_size: 3}
methods:
  hinton: {temperature: 4.0, alpha: 0.9}
"""
STUDY = """\
name: rungs
seed: 0
threads: 1
data: %s
teacher:
  arch: {family: plain_cnn, channels: [16, 32]}
  train: {epochs: 2, lr: 0.05}
student:
  train: {lr: 0.1%s}
search:
  space: space.yaml
  trials: 6
  sampler: random
  %s
objectives: [accuracy, params]
costs: {latency: %s}
"""


def write(folder: Path, rungs: bool = True) -> Path:
    (folder / "space.yaml").write_text(SPACE)
    path = folder / ("study.yaml" if rungs else "flat.yaml")
    path.write_text(STUDY % (DIGITS, "" if rungs else ", epochs: 3",
                             "rungs: {epochs: [1, 3], keep: 1/2}" if rungs else "early_stopping: {enabled: false}",
                             QUICK_LATENCY))
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rungs")
    with working_dir(folder):
        assert main(["search", str(write(folder)), "--trials", "6"]) == 0
    return folder


def test_promoted_runs_continue_their_checkpoint_and_end_as_an_uninterrupted_run(searched: Path) -> None:
    with working_dir(searched):
        trials = {t.number: t for t in stored_trials("rungs")}
        promoted = [t for t in trials.values() if "promoted_from" in t.user_attrs and t.state.name == "COMPLETE"]
        assert promoted, "six trainings of three candidates with keep 1/2 promote at least one run"
        for t in promoted:
            ua = t.user_attrs
            source = trials[ua["promoted_from"]].user_attrs
            assert (ua["rung"], ua["epochs"], source["rung"], source["epochs"]) == (1, 3, 0, 1)
            assert ua["run"] == source["run"] == ua["promoted_from"] and ua["seed"] == source["seed"]
            assert (searched / "runs/rungs/artifacts/rungs" / f"{source['rung_checkpoint']}.pt").is_file()
            assert len(ua["loss_history"]) == 3  # the run's whole history: 1 epoch, then 2 more
        # The same candidate and seed trained 3 epochs without a stop, by a study without rungs: the same weights.
        flat = load_study(write(searched, rungs=False))
        t = promoted[0]
        fixed = optuna.trial.FixedTrial(t.params, number=t.user_attrs["run"])
        rt = prepare(flat)
        try:
            make_objective(rt)(fixed)
        finally:
            rt.close()
        assert fixed.user_attrs["seed"] == t.user_attrs["seed"]
        assert fixed.user_attrs["weights"] == t.user_attrs["weights"]  # a hash of the weights' bytes
        assert fixed.user_attrs["val_accuracy"] == t.user_attrs["val_accuracy"]


def test_the_real_studys_report_says_every_budget(searched: Path) -> None:
    import pandas as pd

    report = searched / "reports" / "rungs"
    assert "## How rankings changed between rungs" in (report / "summary.md").read_text()
    trials = pd.read_csv(report / "trials.csv")
    assert set(trials["epochs"].dropna()) == {1, 3} and trials["promoted_from"].notna().any()
    assert {"rung", "epochs", "val_at_1_epochs", "val_at_3_epochs"} <= set(pd.read_csv(report / "candidates.csv").columns)


def test_a_duplicate_promotion_is_pruned_and_gives_its_training_back(searched: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(searched, tmp_path, dirs_exist_ok=True)
    with working_dir(tmp_path):
        done = [t for t in stored_trials("rungs") if "promoted_from" in t.user_attrs and t.state.name == "COMPLETE"][0]
        study = optuna.load_study(study_name="rungs", storage="sqlite:///runs/rungs/study.db")
        keep = ("candidate_key", "promoted_from", "rung", "run", "rung_checkpoint", "seed", "epochs")
        study.enqueue_trial(done.params, user_attrs={k: done.user_attrs[k] for k in keep})
        before = len(study.trials)
        assert main(["search", str(tmp_path / "study.yaml"), "--trials", "1"]) == 0
        after = stored_trials("rungs")
        dup = after[before - 1]
        assert dup.state.name == "PRUNED" and dup.user_attrs["duplicate_promotion"] is True
        assert f"trial {done.number} already continues" in dup.user_attrs["prune_reason"]
        trained = [t for t in after[before:] if t.state.name == "COMPLETE"]
        assert len(trained) == 1  # the ticket came back: `--trials 1` still trained one


@pytest.mark.parametrize("rungs, message", [
    ("{epochs: [3, 2]}", "search.rungs.epochs: budgets must increase strictly"),
    ("{epochs: [1, 3], keep: 1.5}", "search.rungs.keep: `0 < keep < 1`"),
    ("{epochs: [4]}", "search.rungs.epochs: needs at least two budgets"),
    ("{epochs: [1, 3]}\n  early_stopping: {enabled: true}", "search.early_stopping: rungs replace early stopping"),
])
def test_bad_rungs_are_one_clear_error(tmp_path: Path, capsys, rungs: str, message: str) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("rungs: {epochs: [1, 3], keep: 1/2}", f"rungs: {rungs}"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_student_epochs_must_match_the_last_rung(tmp_path: Path, capsys) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("train: {lr: 0.1}", "train: {lr: 0.1, epochs: 4}"))
    assert main(["validate", str(path)]) == 2
    assert "student.train.epochs: is 4, but search.rungs.epochs ends at 3" in capsys.readouterr().err
    path.write_text(path.read_text().replace("epochs: 4}", "epochs: 3}"))
    cfg = load_study(path)
    assert cfg.student.train.epochs == 3 and cfg.search.rungs.keep == pytest.approx(0.5)


@pytest.mark.slow
def test_two_workers_promote_each_run_once(tmp_path: Path) -> None:
    with working_dir(tmp_path):
        path = write(tmp_path)
        assert main(["search", str(path), "--trials", "10", "--workers", "2"]) == 0
        trials = stored_trials("rungs")
        assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
        trained = [t for t in trials if t.state.name == "COMPLETE" and not t.user_attrs.get("reused")]
        assert len(trained) == 10  # `--trials` counts trainings; a pruned duplicate gave its ticket back
        sources = [t.user_attrs["promoted_from"] for t in trained if "promoted_from" in t.user_attrs]
        assert sources and len(sources) == len(set(sources))  # every run went on at most once
        by_number = {t.number: t for t in trials}
        for s in sources:
            assert by_number[s].state.name == "COMPLETE" and by_number[s].user_attrs["rung"] == 0


def test_a_study_in_score_mode_ranks_a_rung_by_its_score() -> None:
    trials = [trial(0, "A", 0.90, 900), trial(1, "B", 0.85, 100), trial(2, "C", 0.60, 50), trial(3, "D", 0.50, 800)]
    # A score that prices parameters: B (0.85 - 0.01) beats A (0.90 - 0.09) though A is more accurate.
    lad = Ladder(400, ["accuracy", "params"], None, (1, 3), 0.5,
                 scalar=lambda e: e.estimate.mean - e.attrs["params"] / 1e4).update(trials)
    assert [e.key for e in lad.ranking(0)] == ["B", "A", "C", "D"] and [e.key for e in lad.kept(0)] == ["B", "A"]
