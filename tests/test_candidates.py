"""Candidates: identity, estimates with intervals, the table's front on means, intensification, and replicates
in a real search (issue #25)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest

from kdnas.candidates import (CandidateTable, binomial_variance, candidate_key, choose, difference, due, estimate,
                              mean_difference, overdispersion)
from kdnas.candidates._estimate import PRIOR_DF, Z
from tests._util import DIGITS, QUICK_LATENCY, stored_trials, working_dir

OBJ = ["accuracy", "params"]


def _trial(number: int, key: str, val: float, params: int, *, state=optuna.trial.TrialState.COMPLETE, **attrs):
    ua = {"candidate_key": key, "val_accuracy": val, "test_accuracy": val - 0.01, "params": params, "macs": params,
          "latency_ms": 0.1, "student": key, "method": "hinton", "chain": "direct", "seed": 1000 + number, **attrs}
    t = optuna.trial.create_trial(state=state, values=[val, params] if state.name == "COMPLETE" else None,
                                  user_attrs=ua, params={"x": float(number)},
                                  distributions={"x": optuna.distributions.FloatDistribution(0, 1000)})
    t.number = number
    return t


# --- identity -------------------------------------------------------------------------------------------------

def test_a_candidate_is_named_by_what_trains_it() -> None:
    student = {"family": "resnet_cifar", "depth": 8, "width": 0.5}
    direct = {"mode": "takd", "assistants": []}
    recipe = {"student.train.epochs": 5}
    key = candidate_key({"student": student, "method": {"name": "hinton"}, "chain": direct}, recipe)
    # The method's defaults filled in, and a chain mode without assistants, name the same candidate.
    from kdnas.distill import resolve_hyperparameters

    defaults = resolve_hyperparameters("hinton", {})
    assert key == candidate_key({"student": student, "method": {"name": "hinton", **defaults},
                                 "chain": {"mode": "dgkd", "assistants": []}}, recipe)
    # Any training-relevant change is another candidate.
    others = [
        ({"student": {**student, "width": 0.25}, "method": {"name": "hinton"}, "chain": direct}, recipe),
        ({"student": student, "method": {"name": "hinton", "alpha": 0.11}, "chain": direct}, recipe),
        ({"student": student, "method": {"name": "none"}, "chain": direct}, recipe),
        ({"student": student, "method": {"name": "hinton"},
          "chain": {"mode": "takd", "assistants": [{"family": "resnet_cifar", "depth": 8, "width": 1.0}]}}, recipe),
        ({"student": student, "method": {"name": "hinton"}, "chain": direct}, {"student.train.epochs": 6}),
    ]
    assert len({key, *(candidate_key(c, r) for c, r in others)}) == len(others) + 1


# --- estimates --------------------------------------------------------------------------------------------------

def test_one_replicate_has_the_binomial_error_and_the_prior_seed_error() -> None:
    n_val = 360
    est = estimate([0.9], n_val, ratio=1.0)
    b = 0.9 * 0.1 / n_val
    assert est.se == pytest.approx(math.sqrt(2 * b))  # images + one seed at the prior ratio 1
    assert (est.lo, est.hi) == pytest.approx((0.9 - Z * est.se, 0.9 + Z * est.se))
    # A perfect score is not a certain one: half an image of doubt.
    assert estimate([1.0], n_val, 1.0).se > 0 and estimate([1.0], n_val, 1.0).hi == 1.0


def test_replicates_shrink_the_seed_part_towards_the_pooled_ratio() -> None:
    n_val, values = 1000, [0.70, 0.80, 0.75]
    ratio = overdispersion([values], n_val)
    m = statistics.mean(values)
    b = binomial_variance(m, n_val)
    s2 = statistics.variance(values)
    assert ratio == pytest.approx((PRIOR_DF * 1.0 + 2 * s2 / b) / (PRIOR_DF + 2))
    est = estimate(values, n_val, ratio)
    seed_var = (PRIOR_DF * ratio * b + 2 * s2) / (PRIOR_DF + 2)
    assert est.mean == pytest.approx(m) and est.n == 3
    assert est.se == pytest.approx(math.sqrt(b + seed_var / 3))
    # More seeds never shrink the images' part: the error stays above the binomial one.
    assert estimate([0.8] * 50, n_val, ratio).se > math.sqrt(binomial_variance(0.8, n_val))


def test_paired_differences_say_when_they_are_within_noise() -> None:
    a, b = estimate([0.80, 0.82, 0.81], 1000, 1.0), estimate([0.70, 0.71, 0.69], 1000, 1.0)
    d = difference(a, b)
    assert d.mean == pytest.approx(0.11) and not d.within_noise
    close = difference(estimate([0.801], 1000, 1.0), estimate([0.80], 1000, 1.0))
    assert close.within_noise
    avg = mean_difference([d, close])
    assert avg.mean == pytest.approx((0.11 + 0.001) / 2)
    assert avg.se == pytest.approx(math.sqrt(d.se ** 2 + close.se ** 2) / 2)


# --- the table ---------------------------------------------------------------------------------------------------

def test_the_front_is_on_means_and_knows_what_it_cannot_separate() -> None:
    trials = [
        _trial(0, "small", 0.80, 1000), _trial(1, "small", 0.82, 1000),
        _trial(2, "lucky", 0.95, 5000),  # one lucky draw ...
        _trial(3, "lucky", 0.79, 5000),  # ... and its replicate: mean 0.87
        _trial(4, "big", 0.90, 9000), _trial(5, "big", 0.90, 9000), _trial(6, "big", 0.91, 9000),
        _trial(7, "dominated", 0.70, 6000),
        _trial(8, "pruned", 0.99, 10, state=optuna.trial.TrialState.PRUNED),
    ]
    table = CandidateTable(1000, OBJ).update(trials)
    front = table.front()
    assert [e.key for e in front] == ["small", "lucky", "big"]
    assert table.entries["lucky"].estimate.mean == pytest.approx(0.87)
    assert table.entries["lucky"].representative() in (2, 3)
    # "lucky" (0.87 from 0.95 and 0.79) overlaps "small" (0.81): the study cannot say it is more accurate.
    loose = table.not_separable()
    assert "small" in loose.get("lucky", [])
    assert "small" not in loose  # nothing cheaper than the cheapest
    rows = {r["candidate"]: r for r in table.rows()}
    assert rows["lucky"]["replicates"] == 2 and rows["lucky"]["pareto"] and not rows["lucky"]["separable"]
    assert rows["dominated"]["pareto"] is False and "pruned" not in rows
    # Re-reading the same trials adds nothing; a trial read running, then finished, counts once.
    assert table.update(trials).entries["big"].n == 3


def test_running_trials_count_towards_the_cap_and_intensification_picks_the_widest_interval() -> None:
    trials = [_trial(0, "a", 0.80, 1000), _trial(1, "b", 0.90, 5000), _trial(2, "b", 0.91, 5000),
              _trial(3, "b", 0.89, 5000), _trial(4, "c", 0.60, 3000)]
    running = _trial(5, "a", 0.0, 1000, state=optuna.trial.TrialState.RUNNING)
    table = CandidateTable(360, OBJ).update(trials + [running])
    assert table.replicates("a") == 2 and table.replicates("b") == 3
    # A trial counts only lower-numbered replicates: of two trials of one candidate started at once, the
    # higher-numbered sees the lower one, and the lower one need not see it (the cap holds across workers).
    assert table.replicates("a", below=5) == 1 and table.replicates("a", below=6) == 2
    assert table.replicates("b", below=2) == 1
    # "b" is at the cap of 3; "a" (one replicate, one running) is under it and the widest front member.
    pick = choose(table, cap=3)
    assert pick is not None and pick.entry.key == "a" and pick.why == "front"
    assert choose(table, cap=2) is None  # "c" is off the front even at the top of its interval
    # Not due before `after` trainings; then a quarter of what follows.
    assert not due(table, after=10, share=0.25)
    assert due(table, after=5, share=0.25)
    assert not due(table, after=5, share=0.0)


# --- in a real search ---------------------------------------------------------------------------------------------

ONE_CANDIDATE = """\
students:
  resnet_cifar: {depth: 8, width: 0.25}
methods:
  hinton: {temperature: 4.0, alpha: 0.8}
"""


def _study(folder: Path, extra: str) -> Path:
    (folder / "space.yaml").write_text(ONE_CANDIDATE)
    study = folder / "study.yaml"
    study.write_text(f"""\
name: rep
seed: 0
threads: 1
data: {DIGITS}
teacher:
  arch: {{family: resnet_cifar, depth: 8, width: 0.5}}
  train: {{epochs: 1, lr: 0.1}}
student:
  train: {{epochs: 1, lr: 0.1}}
search:
  space: space.yaml
  trials: 5
  early_stopping: {{enabled: false}}
{extra}
objectives: [accuracy, params, latency]
costs: {{latency: {QUICK_LATENCY}}}
""")
    return study


def test_a_repeated_candidate_is_replicated_with_new_seeds_up_to_the_cap_then_answered_free(tmp_path, capsys) -> None:
    from kdnas.cli import main

    with working_dir(tmp_path):
        study = _study(tmp_path, "  replicates: 3\n  intensify: {enabled: false}")
        assert main(["search", str(study)]) == 0
        out = capsys.readouterr().out
        trials = stored_trials("rep")
        trained = [t for t in trials if not t.user_attrs.get("reused")]
        reused = [t for t in trials if t.user_attrs.get("reused")]
        # Five trainings were asked for, but the only candidate has its 3 replicates: the rest answered free.
        assert len(trained) == 3 and len({t.user_attrs["candidate_key"] for t in trials}) == 1
        assert len({t.user_attrs["seed"] for t in trained}) == 3, "each replicate trains under a seed of its own"
        assert [t.user_attrs["replicate"] for t in trained] == [1, 2, 3]
        assert reused and all("seed" not in t.user_attrs and "weights" not in t.user_attrs for t in reused)
        assert "stopping: the last 12 proposals" in out
        # No training past the cap: three students stored, one per replicate.
        assert len(list((tmp_path / "runs/rep/artifacts/students").iterdir())) == 3
        values = [t.user_attrs["val_accuracy"] for t in trained]
        n_val = optuna.load_study(study_name="rep", storage="sqlite:///runs/rep/study.db").user_attrs["data"]["val"]
        expected = estimate(values, n_val, overdispersion([values], n_val))
        for t in reused:
            assert t.user_attrs["val_accuracy"] == pytest.approx(statistics.mean(values))
            assert t.user_attrs["val_accuracy_se"] == pytest.approx(expected.se)
            assert t.values[0] == pytest.approx(statistics.mean(values))
        assert f"val {expected.text()}" in out


@pytest.mark.slow  # 20-80 s (two spawned workers); the rule it relies on is tested without processes above
def test_two_workers_never_train_a_candidate_past_its_cap(tmp_path, capfd) -> None:
    """Both workers propose the only candidate from their first trial on: together they train it exactly
    `replicates` times, each under a seed of its own; every later proposal is answered or set aside."""
    from kdnas.cli import main

    with working_dir(tmp_path):
        study = _study(tmp_path, "  replicates: 2\n  intensify: {enabled: false}")
        assert main(["search", str(study), "--workers", "2", "--trials", "4"]) == 0
        capfd.readouterr()
        trials = stored_trials("rep")
        trained = [t for t in trials if t.state.name == "COMPLETE" and not t.user_attrs.get("reused")]
        assert len(trained) == 2 and len({t.user_attrs["seed"] for t in trained}) == 2
        workers = {t.system_attrs["kdnas:worker"]["pid"] for t in trials}
        assert len(workers) == 2, "both workers ran trials"
        others = [t for t in trials if t not in trained]
        assert all(t.user_attrs.get("reused") or "all training in other trials" in t.user_attrs.get("prune_reason", "")
                   for t in others)
