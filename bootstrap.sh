#!/usr/bin/env bash
# Create .venv (Python 3.12) with everything the workflow and its tests need.
# Idempotent: does nothing when .venv already matches pyproject.toml, requirements.lock and envs/maxtext-runtime.txt.
# Needs only the package registries (PyPI); set PYTHON=/path/to/python3.12 to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.12 "$(command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1)"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "bootstrap: Python 3.12 not found; install it (pyenv install 3.12, apt, or uv python install 3.12) or set PYTHON=/path/to/python3.12" >&2
    exit 1
}

stamp=".venv/.installed-$(cat pyproject.toml requirements.lock envs/maxtext-runtime.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
    exit 0
fi
python=$(find_python)
echo "bootstrap: creating .venv with $("$python" --version) (a few minutes on first run)" >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements.lock -r envs/maxtext-runtime.txt -e '.[dev]'
.venv/bin/python -m pip check
rm -f .venv/.installed-*
touch "$stamp"
echo "bootstrap: .venv is ready" >&2
