#!/usr/bin/env bash
# Optional: open JupyterLab on the notebooks, in the same environment.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec jupyter lab notebooks/ "$@"
