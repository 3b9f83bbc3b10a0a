"""`kdnas dashboard`: optuna-dashboard on a study's storage, with the objectives named."""

from __future__ import annotations

import optuna

from kdnas.config import StudyConfig
from kdnas.core import KdnasError
from kdnas.study import mask_url


def serve(cfg: StudyConfig, study: optuna.Study, host: str, port: int, say=print) -> None:
    """Serve the dashboard until interrupted. Needs the optional ``optuna-dashboard`` package."""
    try:
        import optuna_dashboard
    except ImportError:
        raise KdnasError("`kdnas dashboard` needs optuna-dashboard: pip install 'kdnas[dashboard]'") from None
    if not study.metric_names and study.user_attrs.get("objectives"):
        # Studies made before metric names were stored: name them, or the dashboard shows "Objective 0/1/2".
        from kdnas.costs import METRIC_NAMES

        study.set_metric_names([METRIC_NAMES[o] for o in study.user_attrs["objectives"]])
    say(f"dashboard for study {cfg.name!r} ({mask_url(cfg.storage_url())}) on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        optuna_dashboard.run_server(study._storage, host=host, port=port)
    except OSError as err:
        raise KdnasError(f"cannot serve on {host}:{port}: {err}") from None
