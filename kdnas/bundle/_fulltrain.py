"""`kdnas train BUNDLE`: full training of an exported student and its chain, with checkpoints and resume.

The chain is rebuilt from the bundle alone: the teacher's weights are in ``guides/``; each assistant is
trained anew, largest first, with the assistant recipe and the full epoch count, then the student with the
trial's method. After every epoch the stage's whole training state goes to ``BUNDLE/train/state.pt``
(atomically), finished assistants to ``BUNDLE/train/assistant_<i>.pt``: rerunning the command after an
interruption continues from the last finished epoch, and ends as an uninterrupted run would (DGKD's guide
drops aside, which are drawn afresh after a resume). At the end the fully trained weights are written to
``weights_full.pt`` and the final validation and test accuracies into ``recipe.json`` (``full_result``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from kdnas.bundle._files import deploy, present_formats, read_json, trained_summary
from kdnas.core import (Collector, KdnasError, atomic_write_bytes, load_object, load_state_dict, parse_section,
                        save_object, save_state_dict)
from kdnas.data import DataConfig, load_split
from kdnas.distill import Guide, MethodSpec, TeacherLogits, ensemble_guide, guided_loss
from kdnas.models import build, make_spec
from kdnas.train import TrainRecipe, accuracy, fit, predict, resolve_precision

log = logging.getLogger("kdnas")



def _check_resumable(state: dict, state_path: Path, epochs: int, precision: str) -> None:
    """Refuse to continue an interrupted stage with another epoch count (that would splice two learning-rate
    schedules into one run) or another precision."""
    stage = state.get("stage")
    if state.get("epochs", epochs) != epochs:
        raise KdnasError(f"{state_path}: {stage} was interrupted after epoch {state['fit']['epoch']} of "
                         f"{state['epochs']}, not {epochs}; rerun with --epochs {state['epochs']} to "
                         f"continue it, or remove {state_path} to start this stage over")
    if state.get("precision", "fp32") != precision:
        raise KdnasError(f"{state_path}: {stage} was interrupted training in {state.get('precision', 'fp32')}, not "
                         f"{precision}; rerun with --precision {state.get('precision', 'fp32')} to continue it, or "
                         f"remove {state_path} to start this stage over")

def _recipe(d: dict[str, Any], epochs: int, where: str) -> TrainRecipe:
    problems = Collector(where)
    recipe = parse_section(TrainRecipe, {**d, "epochs": epochs}, "", problems.add)
    problems.raise_if_any()
    return recipe


def train_bundle(bundle: str | Path, epochs: int | None = None, device: str = "cpu", threads: int | None = None,
                 say: Callable[[str], None] = print, force: bool = False, precision: str | None = None) -> dict[str, Any]:
    """Train the bundle's chain and student fully; return ``full_result``. A bundle already trained is
    trained again only with ``force`` (its weights are replaced when the new training ends). ``precision``:
    the training arithmetic (default: the study's, from the bundle's recipe; fp32 for older bundles)."""
    bundle = Path(bundle)
    recipe = read_json(bundle / "recipe.json")
    meta = read_json(bundle / "student.json")
    state_path = bundle / "train" / "state.pt"
    if (bundle / "weights_full.pt").is_file() and not state_path.is_file() and not force:
        raise KdnasError(f"{bundle}: already holds {trained_summary(bundle)}; pass --force to train it again from "
                         f"scratch (the weights there are replaced only when the new training ends)")
    if epochs is not None and epochs < 1:
        raise KdnasError(f"--epochs: `epochs >= 1` must hold, but got epochs={epochs}")
    from kdnas.costs import resolve_device

    dev = resolve_device(device)
    precision = resolve_precision(precision or recipe.get("precision") or "fp32", dev)
    if threads is not None:
        if threads < 1:
            raise KdnasError(f"--threads: `threads >= 1` must hold, but got threads={threads}")
        torch.set_num_threads(threads)
    data = recipe["data"]
    problems = Collector(bundle / "recipe.json")
    data_cfg = parse_section(DataConfig, recipe["data_config"], "data_config", problems.add)
    problems.raise_if_any()
    split = load_split(data_cfg, dev)
    if data.get("fingerprint") and split.fingerprint != data["fingerprint"]:
        raise KdnasError(f"{bundle / 'recipe.json'}: data: the {data['dataset']!r} split here ({split.fingerprint}) is not "
                         f"the one the student was searched on ({data['fingerprint']}); different data or library versions")
    shape, classes = split.input_shape, split.num_classes
    state_dir = bundle / "train"
    resume = load_object(state_path) if state_path.is_file() else None

    augment = _recipe(recipe["full_train"], 1, f"{bundle / 'recipe.json'}: full_train").augment.active
    mode = recipe["chain"]["mode"]
    a_cfg = recipe["assistant_train"]
    full_student = recipe["full_train"]
    n_epochs = epochs or full_student["epochs"]
    a_epochs = epochs or max(full_student["epochs"], 4 * a_cfg["train"]["epochs"])
    stages = [f"assistant_{i}" for i in range(len(recipe["chain"]["assistants"]))] + ["student"]
    if resume is not None:  # before anything trains: a stage trained first would overwrite the interrupted one's state
        _check_resumable(resume, state_path, n_epochs if resume.get("stage") == "student" else a_epochs, precision)
    guides_above = [_teacher(bundle, recipe["teacher"], split, dev, augment)]

    def run(stage: str, spec: dict, method: MethodSpec, train: TrainRecipe, guides: list[Guide], seed: int):
        torch.manual_seed(seed)
        model = build(make_spec(spec, f"recipe.json {stage}"), shape, classes).to(dev)
        state = resume if resume is not None and resume.get("stage") == stage else None
        if state is not None:
            say(f"{stage}: resuming after epoch {state['fit']['epoch']}/{train.epochs}")
        else:
            say(f"{stage}: training {train.epochs} epochs")
        t0 = time.perf_counter()

        def checkpoint(fit_state: dict) -> None:
            buf = {"stage": stage, "fit": fit_state, "epochs": train.epochs, "precision": precision}
            save_object(state_path, buf)
            say(f"{stage}: epoch {fit_state['epoch']}/{train.epochs}, loss {fit_state['history'][-1]:.4f}")

        with guided_loss(method, model, guides, split.train, a_cfg["drop_rate"], seed) as (loss_fn, adapters):
            fit(model, split.train, train, loss_fn, seed, extra=adapters, checkpoint=checkpoint,
                resume=state["fit"] if state else None, precision=precision)
        model.eval()
        say(f"{stage}: val accuracy {accuracy(model, split.val):.2%} ({time.perf_counter() - t0:.0f}s)")
        return model

    for i, a in enumerate(recipe["chain"]["assistants"]):
        stage = stages[i]
        done_path = state_dir / f"{stage}.pt"
        parents = guides_above if mode == "dgkd" else [guides_above[-1]]
        model = build(make_spec(a["spec"], f"recipe.json {stage}"), shape, classes).to(dev)
        # A finished assistant is reused only where this run would train it alike (same epochs and precision:
        # training is seeded, so it would come out the same); otherwise it is trained again, and the line says why.
        how = {"epochs": a_epochs, "precision": precision}
        done_how = done_path.with_suffix(".json")
        before = read_json(done_how) if done_path.is_file() and done_how.is_file() else None
        if before == how:
            model.load_state_dict(load_state_dict(done_path))
            say(f"{stage}: already trained")
        else:
            if done_path.is_file():
                was = (f"{before['epochs']} epochs in {before['precision']}" if before
                       else "by a kdnas that did not record how")
                say(f"{stage}: trained {was}, not {a_epochs} epochs in {precision}: training it again")
            model = run(stage, a["spec"], MethodSpec.from_dict(a_cfg["method"]),
                        _recipe(a_cfg["train"], a_epochs, f"{bundle / 'recipe.json'}: assistant_train.train"), parents, a_cfg["seed"])
            save_state_dict(done_path, model.state_dict())
            atomic_write_bytes(done_how, json.dumps(how).encode())  # after the weights: its presence means both
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        guides_above.append(Guide(stage, stage, model, _logits(model, split, augment), {}))

    student_guides = guides_above if mode == "dgkd" else [guides_above[-1]]
    student = run("student", meta["spec"], MethodSpec.from_dict(recipe["method"]),
                  _recipe(full_student, n_epochs, f"{bundle / 'recipe.json'}: full_train"), student_guides,
                  int(recipe.get("seed") or 0))
    result = {"epochs": n_epochs, "assistant_epochs": a_epochs if len(stages) > 1 else None,
              "val_accuracy": accuracy(student, split.val),
              "test_accuracy": accuracy(student, split.test), "device": str(dev), "precision": precision}
    save_state_dict(bundle / "weights_full.pt", student.state_dict())
    recipe["full_result"] = result
    atomic_write_bytes(bundle / "recipe.json", (json.dumps(recipe, indent=2) + "\n").encode())
    state_path.unlink(missing_ok=True)
    if not (bundle / "preprocess.json").is_file():  # a bundle exported before kdnas wrote it
        atomic_write_bytes(bundle / "preprocess.json", (json.dumps(split.preprocess, indent=2) + "\n").encode())
    # The deployment files and the README must describe the weights load_student now returns.
    for path in deploy(bundle, present_formats(bundle), strict=False, say=say):
        say(f"rewrote {path.name} with the fully trained weights")
    return result


def _teacher(bundle: Path, teacher: dict, split, dev, augment: bool) -> Guide:
    """The bundle's teacher as a guide: one network, or an ensemble of its members (kdnas/distill/_ensemble.py)."""
    def load(net: dict, where: str) -> Guide:
        model = build(make_spec(net["spec"], f"recipe.json {where}.spec"), split.input_shape, split.num_classes)
        model.load_state_dict(load_state_dict(bundle / net["weights"]))
        model.to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return Guide(net.get("name") or "teacher", where, model, _logits(model, split, augment), {})

    if not teacher.get("members"):
        return load(teacher, "teacher")
    parts = [load(m, f"teacher.members[{i}]") for i, m in enumerate(teacher["members"])]
    return ensemble_guide(teacher.get("name") or "ensemble", "teacher", parts, {})


def _logits(model, split, augment: bool) -> TeacherLogits:
    """A guide's logits per batch: one table in memory, or the model on each batch under augmentation."""
    return TeacherLogits(model) if augment else TeacherLogits(model, predict(model, split.train))
