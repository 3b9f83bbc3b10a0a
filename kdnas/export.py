"""Export bundles: a chosen student's spec, weights, full distillation recipe and costs; ``load_student``.

A bundle is a folder that needs nothing else to be used or trained fully::

    student.json   the architecture spec, input shape, class count
    weights.pt     the brief-trained state_dict
    recipe.json    teacher, assistant chain, method and hyperparameters, data split, seeds, training
                   recipes (brief and a suggested full one), library versions
    costs.json     params, MACs, latency and where the latency was measured
    guides/        the teacher's and each assistant's weights, so `kdnas train` can rebuild the chain
    README.md      the same, for humans
    student.pt2 / student.onnx   deployment formats, when asked for
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import optuna

from kdnas.artifacts import ArtifactStore, load_state_dict
from kdnas.config import StudyConfig
from kdnas.errors import KdnasError
from kdnas.models import KDNet, build, make_spec
from kdnas.study import front_trials

BUNDLE_FORMAT = 1
FORMATS = ("pt2", "onnx")

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


def pick_trial(study: optuna.Study, expr: str) -> optuna.trial.FrozenTrial:
    """Among the Pareto-optimal trials that meet every condition, the most accurate (then the smallest)."""
    conditions = parse_pick(expr)
    front = front_trials(study)  # of the measured objectives, in score mode too; infeasible trials left out
    if not front:
        raise KdnasError(f"study {study.study_name!r} has no completed, feasible trial to pick from")
    ok = [t for t in front if all(_OPS[op](t.user_attrs[k], v) for k, op, v in conditions)]
    if not ok:
        smallest = min(front, key=lambda t: t.user_attrs["params"])
        raise KdnasError(f"--pick {expr!r}: none of the {len(front)} Pareto-optimal trials meets it (the smallest, trial "
                         f"{smallest.number}, has {smallest.user_attrs['params']:,} params and "
                         f"{smallest.user_attrs['latency_ms']:.3f} ms)")
    return max(ok, key=lambda t: (t.user_attrs["val_accuracy"], -t.user_attrs["params"]))


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

    import kdnas

    return {"kdnas": kdnas.__version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def _recipe(cfg: StudyConfig, study: optuna.Study, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    ua = t.user_attrs
    data = study.user_attrs.get("data", {})
    teacher = study.user_attrs.get("teacher", {})
    brief = cfg.student.train.to_dict()
    # Same recipe, longer: schedules are functions of progress, so only the epoch count changes.
    full = {**brief, "epochs": max(cfg.teacher.train.epochs, 4 * brief["epochs"])}
    return {
        "format": BUNDLE_FORMAT,
        "study": study.study_name,
        "trial": t.number,
        "teacher": {"spec": teacher.get("spec"), "cache_key": teacher.get("cache_key"),
                    "checkpoint": teacher.get("checkpoint"), "identity": ua.get("teacher"),
                    "val_accuracy": teacher.get("val_accuracy"), "weights": "guides/teacher.pt"},
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
        "data": {k: data.get(k) for k in ("dataset", "fingerprint", "train", "val", "test")} |
                {"test_fraction_used": cfg.data.effective_test_fraction()},
        # The data section as the study file had it; a relative root is made absolute so the bundle can move.
        "data_config": {**vars(cfg.data), "root": str(cfg.resolve(cfg.data.root)) if cfg.data.root else None},
        "seed": ua.get("seed"),
        "brief_result": {"val_accuracy": ua.get("val_accuracy"), "test_accuracy": ua.get("test_accuracy")},
        "versions": _versions(),
    }


def _readme(recipe: dict, costs: dict, student: dict) -> str:
    chain = " > ".join(json.dumps(a["spec"]) for a in recipe["chain"]["assistants"]) or "none (direct distillation)"
    return f"""# kdnas student: study `{recipe['study']}`, trial {recipe['trial']}

- Architecture: `{json.dumps(student['spec'])}` for inputs {student['input_shape']}, {student['num_classes']} classes
- Brief training: val accuracy {recipe['brief_result']['val_accuracy']:.2%}, test accuracy {recipe['brief_result']['test_accuracy']:.2%}
- Costs: {costs['params']:,} params, {costs['macs']:,} MACs, {costs['latency_ms']:.3f} ms per batch of {costs['latency_setting']['batch_size']} on {costs['latency_setting']['device']} ({costs['latency_setting']['threads']} threads)
- Teacher: `{json.dumps(recipe['teacher']['spec'])}`; chain ({recipe['chain']['mode']}): {chain}
- Method: `{json.dumps(recipe['method'])}`

Use it: `model = kdnas.load_student("THIS_FOLDER")`. Train it fully (chain, then student, from scratch with
the recipe in recipe.json): `kdnas train THIS_FOLDER [--epochs N] [--device cuda]`.
"""


def export_trial(cfg: StudyConfig, study: optuna.Study, number: int, out: Path, force: bool = False,
                 formats: tuple[str, ...] = ()) -> Path:
    """Write the bundle of trial ``number`` to ``out`` (all files appear at once, or none)."""
    t = completed_trial(study, number)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise KdnasError(f"{out} exists and is not empty; choose another --out or pass --force")
    ua = t.user_attrs
    store = ArtifactStore(cfg.run_dir / "artifacts")
    weights = store.path("students", ua["weights"])
    if not weights.is_file():
        raise KdnasError(f"weights of trial {number} are missing from {weights.parent} (was the run folder moved?)")
    data = study.user_attrs.get("data", {})
    student = {"format": BUNDLE_FORMAT, "spec": ua["candidate"]["student"],
               "input_shape": data.get("input_shape"), "num_classes": data.get("num_classes")}
    recipe = _recipe(cfg, study, t)
    costs = {k: v for k, v in ua.items() if k in ("params", "macs", "score") or k.startswith("latency_")}
    costs.update(counter=cfg.costs.counter, latency_setting=cfg.costs.latency.identity())
    guides = {"teacher.pt": _teacher_weights(cfg, store, recipe)}
    for a in recipe["chain"]["assistants"]:
        guides[f"{a['key']}.pt"] = store.path("assistants", a["key"])
    for name, path in guides.items():
        if not path.is_file():
            raise KdnasError(f"weights for guides/{name} are missing at {path} (was the run folder moved?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (tmp / "student.json").write_text(json.dumps(student, indent=2) + "\n")
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
        (tmp / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(recipe, costs, student))
        shutil.copyfile(weights, tmp / "weights.pt")
        (tmp / "guides").mkdir()
        for name, path in guides.items():
            shutil.copyfile(path, tmp / "guides" / name)
        for fmt in formats:
            write_deployment(load_student(tmp), tuple(student["input_shape"]), tmp, fmt)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _teacher_weights(cfg: StudyConfig, store: ArtifactStore, recipe: dict) -> Path:
    teacher = recipe["teacher"]
    if teacher.get("checkpoint"):
        return Path(teacher["checkpoint"])
    return store.path("teachers", teacher["cache_key"])


def write_deployment(model: KDNet, input_shape: tuple[int, int, int], folder: Path, fmt: str) -> Path:
    """``student.pt2`` (torch.export, dynamic batch) or ``student.onnx`` (dynamic batch; needs onnx)."""
    import torch
    from torch.export import Dim

    example = (torch.randn(2, *input_shape),)
    dynamic = {"x": {0: Dim("batch", min=1, max=65536)}}
    model = model.eval()
    if fmt == "pt2":
        path = folder / "student.pt2"
        torch.export.save(torch.export.export(model, example, dynamic_shapes=dynamic), path)
        return path
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise KdnasError("--format onnx needs the onnx and onnxscript packages: pip install 'kdnas[onnx]'") from None
        path = folder / "student.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines of its own
            torch.onnx.export(model, example, path, dynamic_shapes=dynamic, dynamo=True, verbose=False)
        return path
    raise KdnasError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")


def load_student(bundle: str | Path, brief: bool = False) -> KDNet:
    """Rebuild an exported student with its weights (loaded with ``weights_only=True``), in eval mode.

    The weights are the fully trained ones when ``kdnas train`` has run on the bundle (unless ``brief``),
    else those of the brief search trial."""
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
    # Fully trained weights (`kdnas train`) when there are some, else the brief-trained ones.
    weights = bundle / "weights_full.pt" if (bundle / "weights_full.pt").is_file() and not brief else bundle / "weights.pt"
    state = load_state_dict(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise KdnasError(f"{weights} does not match {spec.label()}: {str(err).splitlines()[0]}") from None
    return model.eval()
