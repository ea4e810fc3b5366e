#!/usr/bin/env bash
# Install qa with its test extras (into .venv, created if missing) and run the whole test suite,
# lint first. This is what CI runs (.ci/run). Arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

ensure_venv
ensure_installed ".[test,distributed]"
ruff check .
python -m pytest "$@"
