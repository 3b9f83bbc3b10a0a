"""A bundle's folder as a whole: loading its student, which folder ``export --force`` may replace, its
deployment files (kept in step with the weights ``load_student`` returns) and its README.

The files are listed in :data:`FILES`. ``student.onnx`` and ``student.pt2`` always hold the weights
``load_student(bundle)`` returns: the brief-trained ones after ``kdnas export``, the fully trained ones
after ``kdnas train`` (which rewrites them), and ``kdnas deploy`` writes them anew on request.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from kdnas.core import KdnasError, load_state_dict
from kdnas.core._artifacts import _UMASK
from kdnas.models import KDNet, build, make_spec

FORMATS = {"pt2": "student.pt2", "onnx": "student.onnx"}
# Every name kdnas writes into a bundle (student.onnx.data: the external weights older versions wrote).
FILES = {"student.json": "the architecture spec, input shape and class count",
         "weights.pt": "the brief-trained state_dict (from the search trial)",
         "weights_full.pt": "the fully trained state_dict (`kdnas train`)",
         "recipe.json": "teacher, chain, method, data split, seeds, training recipes, versions; `full_result` after training",
         "costs.json": "params, MACs, latency and where the latency was measured",
         "preprocess.json": "how to turn an image into the model's input, and the class names in output order",
         "guides": "the teacher's and the assistants' weights, for `kdnas train`",
         "train": "`kdnas train`'s checkpoints (resume after an interruption)",
         "student.pt2": "torch.export program (dynamic batch size)",
         "student.onnx": "ONNX model with its weights inside (dynamic batch size)",
         "student.onnx.data": "external ONNX weights, written by older kdnas versions (removed when student.onnx is rewritten)",
         "README.md": "this file"}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KdnasError(f"{path.parent} is not a kdnas bundle: {path.name} is missing") from None
    except ValueError as err:
        raise KdnasError(f"{path}: malformed JSON: {err}") from None


def weights_path(bundle: Path, brief: bool = False) -> Path:
    """The weights ``load_student`` uses: the fully trained ones where ``kdnas train`` has run, unless ``brief``."""
    full = bundle / "weights_full.pt"
    return full if full.is_file() and not brief else bundle / "weights.pt"


def load_student(bundle: str | Path, brief: bool = False) -> KDNet:
    """Rebuild an exported student with its weights (loaded with ``weights_only=True``), in eval mode.

    The weights are the fully trained ones when ``kdnas train`` has run on the bundle (unless ``brief``),
    else those of the brief search trial."""
    bundle = Path(bundle)
    meta_path = bundle / "student.json"
    meta = read_json(meta_path)
    spec = make_spec(meta["spec"], source=str(meta_path))
    model = build(spec, tuple(meta["input_shape"]), int(meta["num_classes"]))
    weights = weights_path(bundle, brief)
    state = load_state_dict(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise KdnasError(f"{weights} does not match {spec.label()}: {str(err).splitlines()[0]}") from None
    return model.eval()


# --- what --force may replace ---------------------------------------------------------------------------------


def check_target(out: Path, force: bool, protected: Iterable[Path]) -> None:
    """Refuse an ``--out`` whose replacement would lose anything: a file, a folder that is (or holds) the
    working folder, the study or its runs, a non-empty folder without ``force``, and with it anything but a
    bundle of kdnas's own files that has not been fully trained."""
    if not out.exists():
        return
    if not out.is_dir():
        raise KdnasError(f"--out {out}: is a file, not a folder; choose another --out")
    real = out.resolve()
    for p in protected:
        if p.resolve() == real or real in p.resolve().parents:
            raise KdnasError(f"--out {out}: {'is' if p.resolve() == real else 'holds'} {p}; a bundle needs a folder "
                             f"of its own (e.g. --out bundles/NAME), and --force never replaces this one")
    entries = sorted(e.name for e in out.iterdir())
    if not entries:
        return
    if not force:
        raise KdnasError(f"--out {out}: exists and is not empty; choose another --out, or pass --force to replace "
                         f"the kdnas bundle there")
    if not (out / "student.json").is_file() or not (out / "recipe.json").is_file():
        raise KdnasError(f"--out {out}: is not a kdnas bundle (no student.json and recipe.json), so --force does not "
                         f"replace it; choose another --out")
    foreign = [e for e in entries if e not in FILES and not e.startswith(".deploy.")]  # .deploy.*: deploy's scratch
    if foreign:
        raise KdnasError(f"--out {out}: holds files kdnas did not write ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}), so --force does not replace it; move them or "
                         f"choose another --out")
    if (out / "weights_full.pt").is_file() or (out / "train").is_dir():
        raise KdnasError(f"--out {out}: holds {trained_summary(out)}, which replacing the bundle would lose; "
                         f"move it away or choose another --out")


def trained_summary(bundle: Path) -> str:
    """What ``kdnas train`` left in ``bundle``, in words."""
    try:
        full = json.loads((bundle / "recipe.json").read_text()).get("full_result")
    except (OSError, ValueError):
        full = None
    if full:
        return (f"fully trained weights (weights_full.pt: {full['epochs']} epochs on {full.get('device')}, val "
                f"{full['val_accuracy']:.2%}, test {full['test_accuracy']:.2%})")
    if (bundle / "weights_full.pt").is_file():
        return "fully trained weights (weights_full.pt)"
    return "an interrupted full training (train/)"


def new_folder(parent: Path, name: str) -> Path:
    """An empty hidden folder beside ``parent/name``, with the permissions the umask gives (not mkdtemp's 0700)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))  # a unique name; 0700 until the chmod
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def replace_folder(tmp: Path, out: Path) -> None:
    """``tmp`` becomes ``out``; an ``out`` already there (checked by :func:`check_target`) is moved aside
    first and deleted only once the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old.")) / out.name
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


# --- deployment files -------------------------------------------------------------------------------------------


def write_deployment(model: KDNet, input_shape: tuple[int, int, int], folder: Path, fmt: str) -> Path:
    """``student.pt2`` (torch.export, dynamic batch) or ``student.onnx`` (dynamic batch, weights inside; needs onnx)."""
    import torch
    from torch.export import Dim

    if fmt not in FORMATS:
        raise KdnasError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    example = (torch.randn(2, *input_shape),)
    dynamic = {"x": {0: Dim("batch", min=1, max=65536)}}
    model = model.eval()
    path = folder / FORMATS[fmt]
    if fmt == "pt2":
        torch.export.save(torch.export.export(model, example, dynamic_shapes=dynamic), path)
        return path
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise KdnasError("--format onnx needs the onnx and onnxscript packages: pip install 'kdnas[onnx]'") from None
    # One self-contained file: torch's default writes the weights to student.onnx.data beside it, and the
    # .onnx alone does not load. Protobuf caps a file at 2 GB, far above any student.
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.5 * 2**30
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines of its own
        torch.onnx.export(model, example, path, dynamic_shapes=dynamic, dynamo=True, verbose=False, external_data=big)
    return path


def present_formats(bundle: Path) -> list[str]:
    return [fmt for fmt, name in FORMATS.items() if (bundle / name).is_file()]


def deploy(bundle: Path, formats: Iterable[str], strict: bool = True,
           say: Callable[[str], None] = lambda line: None) -> list[Path]:
    """(Re)write the deployment files ``formats`` from the weights ``load_student`` uses, each replacing the
    old one only when complete; then the README. Not ``strict``: a format that cannot be written has its stale
    file removed (so no file disagrees with the weights), and ``say`` tells why."""
    model = load_student(bundle)
    shape = tuple(read_json(bundle / "student.json")["input_shape"])
    written = []
    for fmt in formats:
        tmp = new_folder(bundle, "deploy")
        try:
            path = write_deployment(model, shape, tmp, fmt)
            os.replace(path, bundle / path.name)
            written.append(bundle / path.name)
        except Exception as err:  # after a long training, any failure here is a line, not a traceback
            if strict:
                raise
            (bundle / FORMATS[fmt]).unlink(missing_ok=True)
            say(f"removed {FORMATS[fmt]}, which held the old weights: {type(err).__name__}: {err}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if (bundle / "student.onnx").is_file():
        (bundle / "student.onnx.data").unlink(missing_ok=True)  # an old export's external weights, now inside
    write_readme(bundle)
    return written


# --- README -----------------------------------------------------------------------------------------------------


def write_readme(bundle: Path) -> None:
    from kdnas.core import atomic_write_bytes

    atomic_write_bytes(bundle / "README.md", readme(bundle).encode())


def readme(bundle: Path) -> str:
    recipe, costs = read_json(bundle / "recipe.json"), read_json(bundle / "costs.json")
    student = read_json(bundle / "student.json")
    chain = " > ".join(json.dumps(a["spec"]) for a in recipe["chain"]["assistants"]) or "none (direct distillation)"
    full = recipe.get("full_result")
    weights = (f"the fully trained ones (weights_full.pt: `kdnas train`, {full['epochs']} epochs: val "
               f"{full['val_accuracy']:.2%}, test {full['test_accuracy']:.2%})" if full and (bundle / "weights_full.pt").is_file()
               else "the brief-trained ones (weights.pt)")
    setting = costs["latency_setting"]
    files = "\n".join(f"- `{name}{'/' if (bundle / name).is_dir() else ''}`: {what}" for name, what in FILES.items()
                      if (bundle / name).exists() or name == "README.md")
    pre = ""
    if (bundle / "preprocess.json").is_file():
        p = read_json(bundle / "preprocess.json")
        size = "x".join(map(str, p["input_shape"][1:]))
        pre = (f"\nInputs: {p['input_shape'][0]}x{size} ({p['color']}), "
               f"{'resized (bilinear) to ' + size if p['resize'] else 'images must be ' + size + ' already'}; "
               f"pixels / {p['pixel_scale']:g}, then (x - mean) / std per channel with mean {p['mean']} and std "
               f"{p['std']}. Output i is class `classes[i]` of preprocess.json.\n")
    return f"""# kdnas student: study `{recipe['study']}`, trial {recipe['trial']}

- Architecture: `{json.dumps(student['spec'])}` for inputs {student['input_shape']}, {student['num_classes']} classes
- Brief training: val accuracy {recipe['brief_result']['val_accuracy']:.2%}, test accuracy {recipe['brief_result']['test_accuracy']:.2%}
- Costs: {costs['params']:,} params, {costs['macs']:,} MACs, {costs['latency_ms']:.3f} ms per batch of {setting['batch_size']} on {setting['device']} ({setting['threads']} threads)
- Teacher: {_teacher_text(recipe['teacher'])}; chain ({recipe['chain']['mode']}): {chain}
- Method: `{json.dumps(recipe['method'])}`
- Weights in use (by `load_student` and in the deployment files): {weights}
{pre}
Use it: `model = kdnas.load_student("THIS_FOLDER")`, or `kdnas predict THIS_FOLDER IMAGES...`. Train it fully
(chain, then student, from scratch with the recipe in recipe.json): `kdnas train THIS_FOLDER [--epochs N]
[--device cuda]`; that also rewrites the deployment files. `kdnas deploy THIS_FOLDER --format onnx` writes them.

Files:
{files}
"""


def _teacher_text(teacher: dict) -> str:
    """One network's spec, or an ensemble's members (the mean of their softened outputs taught the student)."""
    if teacher.get("members"):
        parts = ", ".join(f"{m.get('name')} `{json.dumps(m['spec'])}`" for m in teacher["members"])
        return f"ensemble {teacher.get('name')} (mean of its members' softened outputs): {parts}"
    name = teacher.get("name")
    return (f"{name} " if name and name != "teacher" else "") + f"`{json.dumps(teacher['spec'])}`"
