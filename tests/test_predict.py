"""`kdnas predict` and a bundle's preprocess.json, on a real image folder: scikit-learn's digits written as
grayscale PNGs into class folders named '1'..'10', which an image folder numbers in string order ('1', '10',
'2', ...). What predict prints must be what load_student and the ONNX file say for the same images, before
and after `kdnas train`, with the ONNX file fed as preprocess.json alone tells a user to."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdnas import load_student
from kdnas.cli import main
from tests._datafiles import write_digits_folder
from tests._util import working_dir, write_tiny_study

NAMES = lambda d: str(d + 1)  # noqa: E731 - digit d in folder d+1: '10' holds the nines
DATA = "{dataset: imagefolder, root: digits_png, channels: 1, val_fraction: 0.2, test_fraction: 0.2, seed: 0}"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    """A one-trial study of the digits folder and its bundle (with student.onnx) in ``bundle/``."""
    folder = tmp_path_factory.mktemp("predict")
    files = write_digits_folder(folder / "digits_png", per_class=60, name=NAMES)
    with working_dir(folder):
        study = write_tiny_study(folder, data=DATA)
        assert main(["search", str(study), "--trials", "1"]) == 0
        assert main(["export", str(study), "--trial", "0", "--out", "bundle", "--format", "onnx"]) == 0
    return folder, files


def _as_a_user_would(paths: list[Path], pre: dict) -> np.ndarray:
    """Model inputs from preprocess.json's words alone (PIL and numpy, no kdnas)."""
    from PIL import Image

    c, h, w = pre["input_shape"]
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert(pre["color"])
            if pre["resize"]:
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            x = np.asarray(im, dtype=np.float32).reshape(h, w, c).transpose(2, 0, 1) / pre["pixel_scale"]
        out.append((x - np.array(pre["mean"], np.float32)[:, None, None]) / np.array(pre["std"], np.float32)[:, None, None])
    return np.stack(out).astype(np.float32)


def _check_predictions_agree(bundle: Path, images: list[Path], tmp: Path) -> list[dict]:
    assert main(["predict", str(bundle), *map(str, images), "--out", str(tmp / "p.csv")]) == 0
    rows = list(csv.DictReader((tmp / "p.csv").open()))
    assert [r["path"] for r in rows] == [str(p) for p in images]
    pre = json.loads((bundle / "preprocess.json").read_text())
    x = _as_a_user_would(images, pre)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(bundle / "student.onnx"))
    onnx_logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x})[0])
    with torch.no_grad():
        torch_logits = load_student(bundle)(torch.from_numpy(x))
    for logits in (onnx_logits, torch_logits):
        p, idx = torch.softmax(logits, dim=1).max(dim=1)
        assert [r["class"] for r in rows] == [pre["classes"][i] for i in idx.tolist()]
        np.testing.assert_allclose([float(r["probability"]) for r in rows], p.numpy(), atol=1e-4)
    return rows


def test_predict_agrees_with_load_student_and_onnx_before_and_after_training(project, tmp_path: Path, capsys) -> None:
    folder, files = project
    bundle = folder / "bundle"
    pre = json.loads((bundle / "preprocess.json").read_text())
    # Class names in the order of the model's outputs: the image folder's label order, strings sorted.
    from torchvision.datasets import ImageFolder

    assert pre["classes"] == ImageFolder(str(folder / "digits_png")).classes == sorted(NAMES(d) for d in range(10))
    assert pre["classes"][:3] == ["1", "10", "2"]
    assert pre["input_shape"] == [1, 8, 8] and pre["color"] == "L" and pre["resize"] is None
    ten = [files[NAMES(d)][-1] for d in range(10)]  # one image per class
    _check_predictions_agree(bundle, ten, tmp_path)

    assert main(["train", str(bundle), "--epochs", "6"]) == 0
    _check_predictions_agree(bundle, ten, tmp_path)
    capsys.readouterr()
    # Trained, the names printed are the images' folders: the class names are in the model's output order
    # (in numeric order '1', '2', .., '10', nine of ten classes would be misnamed).
    assert main(["predict", str(bundle), str(folder / "digits_png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 600
    named = [line.split("\t") for line in lines]
    right = sum(Path(path).parent.name == name for path, name, _ in named)
    assert right / len(named) > 0.6, right


def test_predict_refuses_what_it_cannot_read(project, tmp_path: Path, capsys) -> None:
    folder, _ = project
    from PIL import Image

    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "big.png")
    assert main(["predict", str(folder / "bundle"), str(tmp_path / "big.png")]) == 2
    err = capsys.readouterr().err
    assert "big.png is 8x9, not 8x8 as" in err and "preprocess.json requires" in err
    assert main(["predict", str(folder / "bundle"), str(tmp_path / "nothing.png")]) == 2
    assert "nothing.png: no such file or folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path / "big.png")]) == 2
    assert "is not a kdnas bundle" in capsys.readouterr().err
