# Sourced by the other scripts: make .venv (Python 3.11) and install the pinned
# requirements into it when they changed. Honours PYTHON (default python3.11, then python3).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VENV:-$REPO/.venv}"
REQ="${REQ:-requirements/cpu.txt}"
if [ ! -x "$VENV/bin/python" ]; then
  PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is needed, {sys.executable} is {sys.version.split()[0]}"'
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat requirements/*.txt pyproject.toml | sha1sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$REQ" -e .
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
# The stand-in photos beside the repository (CI and this workplace), unless told otherwise.
if [ -z "${HOTDOG_DIR:-}" ] && [ -d "$REPO/../shared/data/hotdog" ]; then
  export HOTDOG_DIR="$REPO/../shared/data/hotdog"
fi
export PATH="$VENV/bin:$PATH"
