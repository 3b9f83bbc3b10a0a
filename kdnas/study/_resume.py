"""Resuming a study: what makes its trials comparable is recorded in the study, and checked at each `kdnas search`.

A front mixes trials only when they were measured alike: the same brief training recipe, the same search
space, the same teacher (and assistants), the same data split. A resumed study whose file changed any of them
would rank 1-epoch and 3-epoch trials together without a word; a changed categorical choice makes Optuna
fail every new trial ("CategoricalDistribution does not support dynamic value space"). So `kdnas search`
records these as the study's user attribute ``comparable`` (a flat ``{key: value}`` per file) and, when it
resumes, compares before anything is trained; the teacher's identity and the split's fingerprint (already the
study's ``teacher`` and ``data`` attributes) are compared as soon as they are known. A difference is one error
line naming the key, the stored and the new value; the way on is a new study name, which keeps the old study
as it is. A study recorded before kdnas did this gets its record now and is not refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from kdnas.config import StudyConfig
from kdnas.core import KdnasError
from kdnas.data import DataSplit
from kdnas.study._storage import open_storage, sqlite_path

RECORD = "comparable"
# Keys of the "study" record written only when not at their default, so that the default keeps every older
# study's record (and so its candidates' keys) as it was.
_OMITTED_AT_DEFAULT = {"precision": "fp32"}


def recipe(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """``{"study": {key: value}, "space": {key: value}[, "score": {key: value}]}``: what this study file makes
    of every trial."""
    study: dict[str, Any] = {}
    _flatten("student.train", cfg.student.train.to_dict(), study)
    if cfg.precision != "fp32":  # trains every network of the study; absent at fp32 (older studies' records)
        study["precision"] = cfg.precision
    if cfg.search.rungs.enabled:  # where trials end and are compared; absent without rungs (older studies' keys)
        study["search.rungs.epochs"] = list(cfg.search.rungs.epochs)
    a = cfg.assistants
    if cfg.space.chain.max_assistants:  # a trial's assistants are trained with these: they shape its student too
        _flatten("assistants", {"train": a.train.to_dict(), "method": a.method, "drop_rate": a.drop_rate,
                                "seed": a.seed}, study)
    # A teacher from a checkpoint is compared by its content (check_inputs), not by its path: a moved file is fine.
    for d in cfg.teacher_set.values():  # one (key `teacher`, as before) or several (`teachers.<name>`)
        t = d.config
        _flatten(d.key, {"arch": t.arch} if t.checkpoint else {"arch": t.arch, "seed": t.seed, "train": t.train.to_dict()},
                 study)
    s = cfg.space
    # Every domain, fixed values too, and the lists of families and methods (a family without parameters has no
    # domain, but adding it changes the categorical `student.family`). Limits are left out: they only screen
    # candidates, and a candidate's measurements do not depend on them.
    space: dict[str, Any] = {"students": sorted(s.families), "methods": sorted(s.methods)}
    if s.teachers:  # the categorical `teacher` (absent with one teacher: older studies' records stay equal)
        space["teachers"] = list(s.teachers)
    groups = [("students", s.families), ("methods", s.methods)]
    if s.chain.max_assistants:
        space.update({"chain.min_assistants": s.chain.min_assistants, "chain.max_assistants": s.chain.max_assistants,
                      "chain.modes": sorted(set(s.chain.modes)), "chain.assistants": sorted(s.assistant_families)})
        groups.append(("chain.assistants", s.assistant_families))
    for section, families in groups:
        for name, domains in families.items():
            for param, domain in domains.items():
                space[f"{section}.{name}.{param}"] = domain.describe()
    out = {"study": study, "space": space}
    if cfg.score.mode == "score":  # the value a trial stores is its combined score: made with these
        sc = cfg.score
        out["score"] = {"score.below": sc.below, "score.above": sc.above,
                        **{f"score.targets.{k}": v for k, v in sc.targets.items()}}
    return json.loads(json.dumps(out))  # as stored: tuples become lists


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def stored_attrs(cfg: StudyConfig, storage: optuna.storages.BaseStorage | None) -> dict[str, Any] | None:
    """The user attributes of the study ``cfg.name``; None when there is no such study yet. ``storage``:
    :func:`kdnas.study._storage.check_storage`'s (None for SQLite, whose file is opened here only if it exists)."""
    if storage is None:
        db = sqlite_path(cfg.storage_url())
        if db is None or not db.is_file():  # nothing written before the search starts
            return None
        storage = open_storage(cfg, create=False)
    try:
        study_id = storage.get_study_id_from_name(cfg.name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id)


def check_recipe(cfg: StudyConfig, attrs: dict[str, Any] | None) -> None:
    """Refuse to resume a study that was searched with another recipe or space (before anything is trained)."""
    stored = (attrs or {}).get(RECORD)
    if not stored:  # a new study, or one from before the record: recorded when the search starts
        return
    now = recipe(cfg)
    for part, file in (("study", cfg.path), ("space", cfg.resolve(cfg.search.space)), ("score", cfg.path)):
        if part not in stored or part not in now:  # score: in score mode only (open_study refuses another mode)
            continue
        old, new = stored[part], now[part]
        # In the study file's sections, a key recorded on one side only is a setting one kdnas version lacked
        # (a new field takes its default, the old behaviour): not a change. In the space, it is one. A key
        # recorded only away from its default (precision) is compared with the default filled in.
        if part == "study":
            old, new = {**_OMITTED_AT_DEFAULT, **old}, {**_OMITTED_AT_DEFAULT, **new}
        keys = set(old) | set(new) if part == "space" else set(old) & set(new)
        changed = [k for k in sorted(keys) if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
        if changed:
            key = changed[0]
            more = f" (also changed: {', '.join(changed[1:])})" if len(changed) > 1 else ""
            _refuse(cfg, file, key, f"{_show(old.get(key, _ABSENT))}", f"{_show(new.get(key, _ABSENT))}", more)


def check_inputs(cfg: StudyConfig, attrs: dict[str, Any] | None, fingerprint: str | None = None,
                 teacher: str | None = None, key: str = "teacher") -> None:
    """Refuse to resume a study on another data split (``fingerprint``) or with another teacher (its identity;
    ``key``: where the study file declares it)."""
    attrs = attrs or {}
    old_split = (attrs.get("data") or {}).get("fingerprint")
    if fingerprint is not None and old_split is not None and old_split != fingerprint:
        _refuse(cfg, cfg.path, "data", f"the split with fingerprint {old_split}", f"one with fingerprint {fingerprint}")
    info = attrs.get("teacher") or {}
    old_teacher = info.get("cache_key") or info.get("checkpoint_sha256")
    if teacher is not None and old_teacher is not None and old_teacher != teacher:
        _refuse(cfg, cfg.path, key, f"the teacher {old_teacher}", f"the teacher {teacher}")


def record(study: optuna.Study, cfg: StudyConfig, teacher_info: dict[str, Any], split: DataSplit,
           teachers: dict[str, dict] | None = None) -> None:
    """Record what the next `kdnas search` of this study compares with (and the report shows): ``teacher_info``
    is the reference teacher's, ``teachers`` every teacher choice's by label."""
    study.set_user_attr(RECORD, recipe(cfg))
    study.set_user_attr("teacher", teacher_info)
    study.set_user_attr("teachers", teachers or {"teacher": teacher_info})
    study.set_user_attr("data", {"dataset": cfg.data.dataset, **split.sizes(), "fingerprint": split.fingerprint,
                                 "input_shape": list(split.input_shape), "num_classes": split.num_classes})
    study.set_user_attr("preprocess", split.preprocess)  # what `kdnas export` writes to preprocess.json
    if cfg.search.rungs.enabled:  # the report ranks each rung as the search did
        study.set_user_attr("rungs_keep", cfg.search.rungs.keep)


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _refuse(cfg: StudyConfig, file: Path, key: str, old: str, new: str, more: str = "") -> None:
    raise KdnasError(
        f"{file}: {key}: the study {cfg.name!r} in storage was searched with {old}, now {new}{more}: its trials "
        f"would not be comparable with new ones; restore the old value, or give the study a new `name` "
        f"(the stored study is kept as it is)"
    )
