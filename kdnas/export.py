"""Export bundles: a chosen student's spec, weights and full distillation recipe; ``load_student``."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import optuna
from torch import nn

from kdnas.artifacts import ArtifactStore, load_state_dict
from kdnas.config import StudyConfig
from kdnas.errors import KdnasError
from kdnas.models import KDNet, build, make_spec

BUNDLE_FORMAT = 1
FILES = ("student.json", "weights.pt", "recipe.json", "costs.json")


def _trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise KdnasError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    t = trials[number]
    if t.state != optuna.trial.TrialState.COMPLETE:
        reason = t.user_attrs.get("fail_reason")
        raise KdnasError(f"trial {number} is {t.state.name}{f' ({reason})' if reason else ''}; only completed trials can be exported")
    return t


def export_trial(cfg: StudyConfig, study: optuna.Study, number: int, out: Path, force: bool = False) -> Path:
    """Write the bundle of trial ``number`` to ``out`` (all files appear at once, or none)."""
    t = _trial(study, number)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise KdnasError(f"{out} exists and is not empty; choose another --out or pass --force")
    ua = t.user_attrs
    store = ArtifactStore(cfg.run_dir / "artifacts")
    weights = store.path("students", ua["weights"])
    if not weights.is_file():
        raise KdnasError(f"weights of trial {number} are missing from {weights.parent} (was the run folder moved?)")
    data = study.user_attrs.get("data", {})
    teacher = study.user_attrs.get("teacher", {})
    student = {"format": BUNDLE_FORMAT, "spec": ua["candidate"]["student"],
               "input_shape": data.get("input_shape"), "num_classes": data.get("num_classes")}
    recipe = {
        "format": BUNDLE_FORMAT,
        "study": study.study_name,
        "trial": number,
        "teacher": {"spec": teacher.get("spec"), "cache_key": teacher.get("cache_key"),
                    "checkpoint": teacher.get("checkpoint"), "val_accuracy": teacher.get("val_accuracy")},
        "assistants": [],
        "method": ua["candidate"]["method"],
        "student_train": cfg.student.train.to_dict(),
        "data": {k: data.get(k) for k in ("dataset", "fingerprint", "train", "val", "test")} |
                {"val_fraction": cfg.data.val_fraction, "test_fraction": cfg.data.test_fraction, "seed": cfg.data.seed},
        "seed": ua.get("seed"),
        "brief_result": {"val_accuracy": ua.get("val_accuracy"), "test_accuracy": ua.get("test_accuracy")},
    }
    costs = {k: v for k, v in ua.items() if k in ("params", "macs", "score") or k.startswith("latency_")}
    costs.update(counter=cfg.costs.counter, latency_setting=cfg.costs.latency.identity())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (tmp / "student.json").write_text(json.dumps(student, indent=2) + "\n")
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
        (tmp / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
        shutil.copyfile(weights, tmp / "weights.pt")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_student(bundle: str | Path) -> KDNet:
    """Rebuild an exported student with its weights (loaded with ``weights_only=True``), in eval mode."""
    bundle = Path(bundle)
    meta_path = bundle / "student.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise KdnasError(f"{bundle} is not a kdnas bundle: student.json is missing") from None
    except ValueError as err:
        raise KdnasError(f"{meta_path}: malformed JSON: {err}") from None
    spec = make_spec(meta["spec"], source=str(meta_path))
    model = build(spec, tuple(meta["input_shape"]), int(meta["num_classes"]))
    state = load_state_dict(bundle / "weights.pt")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise KdnasError(f"{bundle / 'weights.pt'} does not match {spec.label()}: {str(err).splitlines()[0]}") from None
    return model.eval()
