"""Mixed precision (``precision: auto | fp32 | bf16 | fp16``): the arithmetic a study trains in, and what it changes.

On a CPU the autocast and the fp16 gradient scaler run the same code as on a GPU (slowly), so what the
precision touches is checked here: an interrupted fp16 run resumes exactly (the scaler's state travels in the
checkpoint), and a bf16 study keeps its networks apart from fp32 ones (caches, candidate keys, resume, export).
Speed and accuracy on a GPU are benchmarks/device.py's; tests/test_gpu.py runs a two-worker bf16 study on CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ArtifactStore, KdnasError
from kdnas.data import DataConfig, TensorSource, load_split
from kdnas.models import build, make_spec
from kdnas.study._teacher import teacher_key
from kdnas.train import TrainRecipe, fit, resolve_precision
from tests._util import CHAIN_SPACE, stored_trials, write_tiny_study

SPEC = make_spec({"family": "plain_cnn", "channels": [8, 16]})


def test_auto_is_fp32_on_a_cpu_and_names_are_checked() -> None:
    cpu = torch.device("cpu")
    assert [resolve_precision(p, cpu) for p in ("auto", "fp32", "bf16", "fp16")] == ["fp32", "fp32", "bf16", "fp16"]
    with pytest.raises(KdnasError, match="precision: expected one of auto, fp32, bf16, fp16, got 'half'"):
        resolve_precision("half", cpu)


@pytest.mark.parametrize("capabilities, expected", [
    ([(9, 0)], "bf16"),                  # an H100
    ([(8, 0), (8, 6)], "bf16"),          # A100 and RTX 3090: both have bfloat16 tensor cores
    ([(7, 0)], "fp16"),                  # a V100
    ([(8, 6), (7, 5)], "fp16"),          # an RTX 3090 beside a 2080 Ti: every worker alike, so fp16 for all
])
def test_auto_on_cuda_is_one_precision_for_every_gpu_of_the_machine(monkeypatch, capabilities, expected) -> None:
    """No GPU here: the machine's GPUs are what torch.cuda reports (device_count, get_device_capability)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda d=None: capabilities[0 if d is None or torch.device(d).index is None else torch.device(d).index])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "a GPU")
    resolved = {resolve_precision("auto", torch.device(d)) for d in ["cuda", *(f"cuda:{i}" for i in range(len(capabilities)))]}
    assert resolved == {expected}  # the command's process (plain `cuda`) and each worker's GPU agree
    if expected == "fp16":  # asked for explicitly, bf16 is still refused only where that GPU lacks it
        old = next(i for i, c in enumerate(capabilities) if c[0] < 8)
        with pytest.raises(KdnasError, match="bf16 was asked for, but a GPU has no bfloat16 arithmetic"):
            resolve_precision("bf16", torch.device(f"cuda:{old}"))


def test_an_interrupted_fp16_run_resumes_exactly_with_its_loss_scale() -> None:
    split = load_split(DataConfig("digits"))
    data = TensorSource(split.train.x[:256], split.train.y[:256])
    recipe = TrainRecipe(epochs=3, lr=0.1)

    def run(**kw):
        torch.manual_seed(0)
        model = build(SPEC, split.input_shape, 10)
        states: list[dict] = []
        history = fit(model, data, recipe, lambda o, b: F.cross_entropy(o, b.y), 0, checkpoint=states.append,
                      precision="fp16", **kw)
        return model, history, states

    whole, history, states = run()
    scaler = states[0]["scaler"]
    assert scaler is not None and scaler["scale"] > 0, "the checkpoint carries the loss scale"
    # The scale after epoch 1 differs from a fresh scaler's only if a step overflowed; either way the resumed
    # run must end exactly where the uninterrupted one did.
    resumed, rest, _ = run(resume=states[0])
    assert rest == history
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_a_bf16_study_keeps_its_networks_apart_from_fp32_ones(tiny_study: Path, tmp_path: Path, capsys) -> None:
    # bf16 autocast runs on a CPU too: the whole study (teacher, an assistant, students) trains in it.
    tiny_study = write_tiny_study(tmp_path, teacher_width=1.0, extra="precision: bf16\n")
    (tmp_path / "space.yaml").write_text(CHAIN_SPACE)
    (tmp_path / "runs/tiny").mkdir(parents=True)
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/runs/tiny/study.db",
                                directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial({"chain.length": 1})
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    done = stored_trials()
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"], [t.user_attrs.get("fail_reason") for t in done]
    assert done[0].user_attrs["assistants"], "the enqueued trial trained through an assistant"

    # The teacher was trained in bf16 and cached under its own key: an fp32 study would train its own.
    cfg = load_study(tiny_study)
    split = load_split(cfg.data)
    store = ArtifactStore(tmp_path / "runs/tiny/artifacts")
    assert store.has("teachers", teacher_key(cfg, split, None, "bf16"))
    assert not store.has("teachers", teacher_key(cfg, split, None, "fp32"))
    assert optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/runs/tiny/study.db") \
        .user_attrs["comparable"]["study"]["precision"] == "bf16"

    # Resuming in another precision would mix fp32 and bf16 trials on one front: refused, naming the key.
    capsys.readouterr()
    assert main(["search", str(tiny_study), "--trials", "1", "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "precision: the study 'tiny' in storage was searched with bf16, now fp32" in err and "Traceback" not in err
    assert len(stored_trials()) == 2

    # The bundle says how the student was trained; its full training uses the same precision by default.
    bundle = tmp_path / "bundle"
    assert main(["export", str(tiny_study), "--trial", "0", "--out", str(bundle)]) == 0
    assert json.loads((bundle / "recipe.json").read_text())["precision"] == "bf16"
    assert main(["train", str(bundle), "--epochs", "1"]) == 0
    assert json.loads((bundle / "recipe.json").read_text())["full_result"]["precision"] == "bf16"
