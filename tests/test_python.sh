#!/bin/sh
# tests/test_python.sh: the refit Python module's CI tests (numpy, no GPU, no torch), with the
# module ninja built into build/python and the python3 configure chose.
cd "$(dirname "$0")/.." || exit 1
py=$(sed -n 's/^python = //p' config.ninja)
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$PWD/build/python exec "${py:-python3}" tests/test_python.py "$@"
