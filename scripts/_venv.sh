# Shared by quickstart.sh and test.sh (sourced, not run): the project's virtual environment.

# .venv, created with the first `python3` on PATH (or $PYTHON) when missing, then activated.
ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        echo "Creating .venv with ${PYTHON:-python3}"
        "${PYTHON:-python3}" -m venv .venv
    fi
    # shellcheck disable=SC1091
    . .venv/bin/activate
}

# `pip install -e TARGET` unless this TARGET was installed from the same pyproject.toml already
# (a stamp in .venv remembers it): a second run starts in seconds instead of resolving again.
ensure_installed() {
    local target=$1 stamp sum
    stamp=".venv/.installed-$(printf '%s' "$target" | tr -c 'A-Za-z0-9' '_')"
    sum=$(python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
        return
    fi
    if ! python -c 'import torch' 2>/dev/null; then
        # The CPU build of PyTorch, before anything pulls a CUDA one.
        pip install torch==2.13.0
    fi
    pip install -e "$target"
    echo "$sum" > "$stamp"
}
