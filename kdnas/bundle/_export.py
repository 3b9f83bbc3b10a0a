"""Export bundles: a chosen student's spec, weights, full distillation recipe and costs; ``load_student``.

A bundle is a folder that needs nothing else to be used or trained fully::

    student.json   the architecture spec, input shape, class count
    weights.pt     the brief-trained state_dict
    preprocess.json  what the model is fed: input shape, color, resize, mean and std; class names in output order
    recipe.json    teacher, assistant chain, method and hyperparameters, data split, seeds, training
                   recipes (brief and a suggested full one), library versions
    costs.json     params, MACs, latency and where the latency was measured
    guides/        the teacher's and each assistant's weights, so `kdnas train` can rebuild the chain
    README.md      the same, for humans
    student.pt2 / student.onnx   deployment formats, when asked for (kdnas.bundle._files keeps them in step)
"""

from __future__ import annotations

import json
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from kdnas.bundle._files import (FORMATS, check_target, load_student, new_folder, readme, replace_folder,
                                 write_deployment)
from kdnas.candidates import Entry
from kdnas.config import StudyConfig
from kdnas.core import ArtifactStore, KdnasError, __version__
from kdnas.study import candidates_of, open_store, teacher_suffix

__all__ = ["export_trial", "load_student", "pick", "pick_trial", "parse_pick", "Pick", "FORMATS"]

BUNDLE_FORMAT = 1

_CONDITION = re.compile(r"^\s*(params|macs|latency_ms|val_accuracy|test_accuracy)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*$")
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def parse_pick(expr: str) -> list[tuple[str, str, float]]:
    """``"params<50000, latency_ms<=0.5"`` -> conditions. Parsed, never evaluated."""
    conditions = []
    for part in re.split(r",|\band\b", expr):
        m = _CONDITION.match(part)
        if not m:
            raise KdnasError(f"--pick: cannot read {part.strip()!r}; write conditions like 'params<50000' or "
                             "'latency_ms<=0.5' (params, macs, latency_ms, val_accuracy, test_accuracy; < <= > >=), "
                             "joined by ',' or 'and'")
        try:
            conditions.append((m[1], m[2], float(m[3])))
        except ValueError:
            raise KdnasError(f"--pick: {m[3]!r} is not a number") from None
    return conditions


@dataclass(frozen=True)
class Pick:
    """What ``--pick`` chose: the candidate, the trial exported for it (its representative: the replicate closest
    to its mean) and the other front candidates within the budget that its 90 % interval overlaps."""

    trial: optuna.trial.FrozenTrial
    entry: Entry
    close: list[tuple[optuna.trial.FrozenTrial, Entry]]
    within: int  # front candidates within the budget

    def lines(self, expr: str) -> list[str]:
        """What ``kdnas export --pick`` says: the choice, and each runner-up it is within noise of."""
        out = [f"--pick {expr!r}: trial {self.trial.number}, {_describe(self.entry, self.trial)}: the highest mean "
               f"validation accuracy of the {self.within} candidate{'s' * (self.within != 1)} on the front of means "
               "within the budget"]
        for t, e in self.close:
            out.append(f"within noise of trial {t.number}: {_describe(e, t)} (the 90 % intervals overlap: after the "
                       "search's brief training the study cannot tell which is more accurate)")
        return out


def _describe(e: Entry, t: optuna.trial.FrozenTrial) -> str:
    """The candidate's figures; with rungs (``search.rungs``), at which budget (`@18 ep`: its trial's)."""
    at = f" @{t.user_attrs['epochs']} ep" if "rung" in t.user_attrs and "epochs" in t.user_attrs else ""
    return (f"val {e.estimate.text()}{at}, {int(e.attrs['params']):,} params, "
            f"{float(e.attrs['latency_ms']):.3f} ms, {e.attrs.get('student')} {e.attrs.get('method')}"
            + teacher_suffix(e.attrs))


def _figure(e: Entry, key: str) -> float | None:
    """A candidate's figure a --pick condition reads: its mean accuracies, its costs."""
    if key == "val_accuracy":
        return e.estimate.mean
    if key == "test_accuracy":
        return e.test_mean()
    return e.attrs.get(key)


def pick(study: optuna.Study, expr: str) -> Pick:
    """Among the candidates on the front of means that meet every condition (on their means and costs), the one
    with the highest mean (then the smallest); with the others within the budget whose intervals overlap it."""
    conditions = parse_pick(expr)
    trials = study.get_trials(deepcopy=False)
    # Of the measured objectives, in score mode too; infeasible trials left out.
    front = candidates_of(study, trials).front()
    if not front:
        raise KdnasError(f"study {study.study_name!r} has no completed, feasible trial to pick from")
    ok = [e for e in front if all((v := _figure(e, k)) is not None and _OPS[op](v, x) for k, op, x in conditions)]
    by_number = {t.number: t for t in trials}
    if not ok:
        smallest = min(front, key=lambda e: e.attrs["params"])
        raise KdnasError(f"--pick {expr!r}: none of the {len(front)} Pareto-optimal candidates meets it (the "
                         f"smallest, trial {smallest.representative()}, has {smallest.attrs['params']:,} params and "
                         f"{smallest.attrs['latency_ms']:.3f} ms)")
    ok.sort(key=lambda e: (-e.estimate.mean, e.attrs["params"]))
    best = ok[0]
    close = [(by_number[e.representative()], e) for e in ok[1:] if e.estimate.overlaps(best.estimate)]
    return Pick(by_number[best.representative()], best, close, len(ok))


def pick_trial(study: optuna.Study, expr: str) -> optuna.trial.FrozenTrial:
    """The trial ``--pick`` exports: the representative of the front candidate with the highest mean validation
    accuracy that meets every condition (``pick`` says what else is within noise of it)."""
    return pick(study, expr).trial


def completed_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise KdnasError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    t = trials[number]
    if t.state != optuna.trial.TrialState.COMPLETE:
        reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason")
        raise KdnasError(f"trial {number} is {t.state.name}{f' ({reason})' if reason else ''}; only completed trials can be exported")
    return t


def _versions() -> dict[str, str]:
    import numpy
    import torch

    return {"kdnas": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def _recipe(cfg: StudyConfig, study: optuna.Study, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    ua = t.user_attrs
    data = study.user_attrs.get("data", {})
    brief = cfg.student.train.to_dict()
    # Same recipe, longer: schedules are functions of progress, so only the epoch count changes.
    full = {**brief, "epochs": max(cfg.teacher.train.epochs, 4 * brief["epochs"])}
    return {
        "format": BUNDLE_FORMAT,
        "study": study.study_name,
        "trial": t.number,
        "teacher": _teacher_recipe(study, t),
        # Largest assistant first; each entry's key names its weights in guides/ and in the run folder's store.
        "chain": {"mode": ua["candidate"].get("chain", {}).get("mode", "takd"),
                  "assistants": [{**a, "weights": f"guides/{a['key']}.pt"} for a in ua.get("assistants", [])]},
        "assistant_train": {"train": cfg.assistants.train.to_dict(), "method": cfg.assistants.method,
                            "drop_rate": cfg.assistants.drop_rate, "seed": cfg.assistants.seed},
        # The values the run used, defaults included (the candidate holds only what was sampled).
        "method": {"name": ua["candidate"]["method"]["name"], **ua.get("method_hyperparameters", {}),
                   **{k: v for k, v in ua["candidate"]["method"].items() if k != "name"}},
        "student_train": brief,
        "full_train": full,
        "precision": cfg.precision,  # as the study declared it; `kdnas train` resolves it on its own device
        "data": {k: data.get(k) for k in ("dataset", "fingerprint", "train", "val", "test")} |
                {"test_fraction_used": cfg.data.effective_test_fraction()},
        # The data section as the study file had it; a relative root is made absolute so the bundle can move.
        "data_config": {**vars(cfg.data), "root": str(cfg.resolve(cfg.data.root)) if cfg.data.root else None},
        "seed": ua.get("seed"),
        "brief_result": {"val_accuracy": ua.get("val_accuracy"), "test_accuracy": ua.get("test_accuracy")},
        "versions": _versions(),
    }


def export_trial(cfg: StudyConfig, study: optuna.Study, number: int, out: Path, force: bool = False,
                 formats: tuple[str, ...] = ()) -> Path:
    """Write the bundle of trial ``number`` to ``out`` (all files appear at once, or none)."""
    t = completed_trial(study, number)
    out = Path(out)
    check_target(out, force, _protected(cfg))
    ua = t.user_attrs
    store = open_store(cfg)  # the run folder's, or the study's shared store: any machine exports any trial
    weights = store.fetch("students", ua["weights"])
    if not weights.is_file():
        raise KdnasError(f"weights of trial {number} are missing from {_where(store, 'students')} (was the run "
                         "folder moved?)")
    data = study.user_attrs.get("data", {})
    student = {"format": BUNDLE_FORMAT, "spec": ua["candidate"]["student"],
               "input_shape": data.get("input_shape"), "num_classes": data.get("num_classes")}
    recipe = _recipe(cfg, study, t)
    costs = {k: v for k, v in ua.items() if k in ("params", "macs", "score") or k.startswith("latency_")}
    costs.update(counter=cfg.costs.counter, latency_setting=cfg.costs.latency.identity())
    guides = _teacher_weights(store, recipe["teacher"])
    for a in recipe["chain"]["assistants"]:
        guides[f"{a['key']}.pt"] = store.fetch("assistants", a["key"])
    for name, path in guides.items():
        if not path.is_file():
            shown = path if store.remote is None else f"{store.shown}/{path.parent.name}/{path.name}"
            raise KdnasError(f"weights for guides/{name} are missing at {shown} (was the run folder moved?)")
    preprocess = _preprocess(cfg, study)
    tmp = new_folder(out.parent, out.name)
    try:
        for name, content in (("student.json", student), ("recipe.json", recipe), ("costs.json", costs),
                              ("preprocess.json", preprocess)):
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
        shutil.copyfile(weights, tmp / "weights.pt")
        (tmp / "guides").mkdir()
        for name, path in guides.items():
            shutil.copyfile(path, tmp / "guides" / name)
        for fmt in formats:
            write_deployment(load_student(tmp), tuple(student["input_shape"]), tmp, fmt)
        (tmp / "README.md").write_text(readme(tmp))
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _where(store: ArtifactStore, kind: str) -> str:
    return f"{store.shown}/{kind}" if store.remote is not None else str(store.root / kind)


def _protected(cfg: StudyConfig) -> list[Path]:
    """Folders an --out must neither be nor hold: where the user works, and the study's files and results."""
    folders = [Path.cwd(), cfg.path.parent, cfg.run_dir, cfg.report_dir, cfg.resolve(cfg.search.space).parent]
    if cfg.artifacts.url is not None and not cfg.artifacts.is_s3:  # the study's shared store
        folders.append(cfg.resolve(cfg.artifacts.url))
    return folders + ([cfg.resolve(cfg.data.root)] if cfg.data.root else [])


def _preprocess(cfg: StudyConfig, study: optuna.Study) -> dict:
    """What the student is fed (kdnas.data._preprocess): recorded by the search; for a study searched before
    kdnas recorded it, read again from the data, which must be the split the study was searched on."""
    if study.user_attrs.get("preprocess"):
        return study.user_attrs["preprocess"]
    from kdnas.data import load_split

    split = load_split(cfg.data, "cpu", cfg.path)
    fingerprint = study.user_attrs.get("data", {}).get("fingerprint")
    if fingerprint and split.fingerprint != fingerprint:
        raise KdnasError(f"{cfg.path}: data: the split here ({split.fingerprint}) is not the one study {cfg.name!r} was "
                         f"searched on ({fingerprint}), so its preprocessing cannot be recorded in the bundle")
    return split.preprocess


def _teacher_recipe(study: optuna.Study, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's teacher as recipe.json holds it: one network (its spec, identity, weights in guides/teacher.pt),
    or an ensemble (``members``, each with its own weights in guides/teacher-<name>.pt). A labels-only trial
    names none; its bundle carries the study's reference teacher, whose outputs it never used."""
    ua = t.user_attrs
    reference = study.user_attrs.get("teacher", {})
    choices = study.user_attrs.get("teachers") or {}
    label = ua.get("teacher_name")
    info = choices.get(label) or reference
    out = {"name": label, "identity": ua.get("teacher"), "val_accuracy": info.get("val_accuracy"),
           "params": info.get("params")}
    if not info.get("members"):
        return {**out, **_network(info), "weights": "guides/teacher.pt"}
    return {**out, "spec": None, "members": [{"name": m, **_network(choices[m]), "weights": f"guides/teacher-{m}.pt"}
                                             for m in info["members"]]}


def _network(info: dict) -> dict[str, Any]:
    return {"spec": info.get("spec"), "cache_key": info.get("cache_key"), "checkpoint": info.get("checkpoint")}


def _teacher_weights(store: ArtifactStore, teacher: dict) -> dict[str, Path]:
    """guides/ file name -> where the run folder holds those weights, for the teacher or each ensemble member."""
    def where(net: dict) -> Path:
        return Path(net["checkpoint"]) if net.get("checkpoint") else store.fetch("teachers", net["cache_key"])

    return {Path(net["weights"]).name: where(net) for net in teacher.get("members") or [teacher]}
