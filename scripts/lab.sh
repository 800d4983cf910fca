#!/usr/bin/env bash
# Optional: open JupyterLab on the notebooks, in the same environment. The notebooks save
# and replay runs in the main job's run store (build/runs) unless D2L_RUNS_DIR says otherwise.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export D2L_RUNS_DIR="${D2L_RUNS_DIR:-$REPO/build/runs}"
exec jupyter lab notebooks/ "$@"
