#!/usr/bin/env bash
# The main job: set up .venv, then execute every notebook headless into build/notebooks
# and write build/results.md. Profile: $D2L_PROFILE, or by hardware (cpu without a GPU).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
python -m d2l_helpers run "$@"
