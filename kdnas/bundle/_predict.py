"""`kdnas predict BUNDLE IMAGES...`: class names for image files, from the bundle's student.

The images are preprocessed as the bundle's ``preprocess.json`` records, by the code evaluation reads
image folders with (:func:`kdnas.data.read_inputs`), and the student is the one ``load_student`` returns
(fully trained where ``kdnas train`` has run): what you see here is what the ONNX file gives.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import torch

from kdnas.bundle._files import load_student, read_json
from kdnas.core import KdnasError, atomic_write_bytes
from kdnas.data import check_preprocess, read_inputs

_BATCH = 256


def image_files(items: Sequence[str | Path]) -> list[Path]:
    """The files named, and the image files under the folders named (recursively, sorted; hidden ones left out)."""
    from PIL import Image

    suffixes = {s.lower() for s in Image.registered_extensions()}
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                raise KdnasError(f"{item}: no image files in this folder")
            out.extend(found)
        elif item.is_file():
            out.append(item)
        else:
            raise KdnasError(f"{item}: no such file or folder")
    return out


def preprocessing(bundle: Path) -> dict:
    path = bundle / "preprocess.json"
    if not path.is_file() and (bundle / "student.json").is_file():
        raise KdnasError(f"{path} is missing: the bundle was exported before kdnas recorded its preprocessing; "
                         f"export the trial again (or run `kdnas train` on it, which adds the file)")
    pre = read_json(path)
    check_preprocess(pre, str(path))
    return pre


def predict_images(bundle: str | Path, items: Sequence[str | Path], brief: bool = False) -> list[dict[str, Any]]:
    """One row per image: ``path``, ``class`` (its name), ``index`` (the model's output) and ``probability``."""
    bundle = Path(bundle)
    pre = preprocessing(bundle)
    model = load_student(bundle, brief=brief)
    paths = image_files(items)
    rows = []
    for i in range(0, len(paths), _BATCH):
        chunk = paths[i : i + _BATCH]
        with torch.no_grad():
            probs = torch.softmax(model(read_inputs(chunk, pre, str(bundle / "preprocess.json"))), dim=1)
        p, idx = probs.max(dim=1)
        rows += [{"path": str(path), "class": pre["classes"][int(k)], "index": int(k), "probability": float(q)}
                 for path, k, q in zip(chunk, idx, p)]
    return rows


def write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "class", "index", "probability"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out, buf.getvalue().encode())
