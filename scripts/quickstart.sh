#!/usr/bin/env bash
# From a fresh clone (Python 3 and bash) to the chat on the demo corpus, in one command:
# creates .venv, installs qa (the CPU build of PyTorch first), builds the index of corpus/ and
# starts the chat, printing its address. Safe to run again: it reuses the environment and the
# index when nothing changed. Arguments go to `qa serve` (e.g. --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

ensure_venv
ensure_installed "."
qa index
exec qa serve "$@"
