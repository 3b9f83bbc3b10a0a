"""What `kdnas validate` checks beyond the study and space files: what a search would otherwise find only
after minutes or hours. The data is read (an image folder is scanned file by file, every bad file listed), a
teacher checkpoint is loaded into teacher.arch and evaluated on the validation split. Nothing is written."""

from __future__ import annotations

from kdnas.config import StudyConfig
from kdnas.core import Collector
from kdnas.data import DATASETS, load_raw, load_split, resolve_root, scan_image_folder


def preflight(cfg: StudyConfig) -> list[str]:
    """Raise a KdnasError (a ConfigError listing every problem where there are several) for what would fail
    later; return warning lines for what would run but is probably not what the user meant."""
    warnings: list[str] = []
    if DATASETS.get(cfg.data.dataset).files == "folder":
        problems = Collector(cfg.path)
        warnings += scan_image_folder(resolve_root(cfg.data, cfg.path), cfg.data.resize, problems.add)
        problems.raise_if_any()
    if cfg.data.download:  # validate runs nothing, and downloads nothing
        return warnings + [f"{cfg.path}: data not read: data.download is set, and validate downloads nothing"]
    raw = load_raw(cfg.data, cfg.path)  # unreadable files, fewer than two classes
    from_files = [t for t in cfg.teacher_set.values() if t.config.checkpoint is not None]
    if not from_files:
        return warnings
    from kdnas.models import build
    from kdnas.study._teacher_checks import chance_warning, load_teacher_checkpoint
    from kdnas.train import accuracy

    split = load_split(cfg.data, "cpu", cfg.path)
    for t in from_files:
        model = build(t.spec, raw.train.shape, raw.num_classes)
        load_teacher_checkpoint(cfg, model, raw.train.shape, raw.num_classes, t.name)
        warning = chance_warning(accuracy(model.eval(), split.val), split.num_classes)
        if warning:
            warnings.append(warning if len(cfg.teacher_set) == 1 else f"{t.key}: {warning}")
    return warnings
