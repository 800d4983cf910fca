#!/usr/bin/env bash
# The tests: set up .venv, then unit tests, real-weight tests, a short real training run,
# and every notebook executed by nbval (ci profile unless D2L_PROFILE says otherwise).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export D2L_PROFILE="${D2L_PROFILE:-ci}"
python -m pytest "$@"
