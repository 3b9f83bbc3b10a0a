"""What two steps of every command cost in a fresh process: kdnas's way against the library call it replaced.

Each command is a new Python process, so what a step imports is part of what it costs. Two steps paid for
imports they did not need:

- **digits**: ``sklearn.datasets.load_digits()`` imports scikit-learn's datasets package (1.6-2 s) to read
  one small CSV. kdnas reads the same file itself (``kdnas.data._sources._digits``; the arrays are tested
  equal).
- **importances**: ``optuna.importance.get_param_importances`` (PED-ANOVA) imports the package's fANOVA
  evaluators too, and they import scikit-learn and SciPy's statistics (2.4-3.4 s). kdnas loads the PED-ANOVA
  evaluator alone (``kdnas.results._report.importances``; the figures are tested equal).

Each side runs in a fresh interpreter that has already imported what both sides need (numpy, torch, optuna,
kdnas's data or report module), and times only the step, imports included. Sides alternate, ``--rounds``
times; the study for the importances is a real Optuna study of 40 trials (random sampler, three parameters,
two objectives) written once into a temporary SQLite file. Printed: the median of each side and their ratio.

    PYTHONPATH=. python benchmarks/imports.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

MAKE_STUDY = """
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name="s", storage={url!r}, directions=["maximize", "minimize"],
                            sampler=optuna.samplers.RandomSampler(seed=0))
for _ in range(40):
    t = study.ask()
    x, c, n = t.suggest_float("x", 0, 1), t.suggest_categorical("c", ["a", "b", "d"]), t.suggest_int("n", 0, 5)
    study.tell(t, [x + 0.3 * (c == "a") - 0.05 * n, n])
"""

PRELUDE = {
    "digits": "import numpy, torch, kdnas.data._sources as src\n",
    "importances": ("import warnings, optuna, kdnas.results._report as rep\nwarnings.simplefilter('ignore')\n"
                    "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
                    "study = optuna.load_study(study_name='s', storage={url!r})\n"),
}
SIDES = {
    "digits": {
        "kdnas": "src._digits(src.Location(None))",
        "load_digits": "__import__('sklearn.datasets').datasets.load_digits()",
    },
    "importances": {
        "kdnas": "rep.importances(study)",
        "optuna": "__import__('optuna.importance').importance.get_param_importances(study, target=lambda t: -t.values[0])",
    },
}
TIMED = "import time\nt = time.perf_counter()\n{step}\nprint(time.perf_counter() - t)\n"


def run(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_studies.child_env(),
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"each step timed in a fresh interpreter, imports included; {args.rounds} rounds; {_studies.machine()}")
    with tempfile.TemporaryDirectory(prefix="kdnas-imports-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'study.db'}"
        subprocess.run([sys.executable, "-c", MAKE_STUDY.format(url=url)], check=True, env=_studies.child_env())
        for step, sides in SIDES.items():
            times: dict[str, list[float]] = {name: [] for name in sides}
            for r in range(args.rounds):
                for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                    times[name].append(run(PRELUDE[step].format(url=url) + TIMED.format(step=sides[name])))
            ours, (other, ref) = times.pop("kdnas"), times.popitem()
            print(f"{step:12s} kdnas {statistics.median(ours):6.3f} s   {other} {statistics.median(ref):6.3f} s   "
                  f"{statistics.median(ref) / statistics.median(ours):5.1f}x   "
                  f"(kdnas {min(ours):.3f}-{max(ours):.3f} s, {other} {min(ref):.3f}-{max(ref):.3f} s)")


if __name__ == "__main__":
    main()
