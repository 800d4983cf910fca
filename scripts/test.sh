#!/usr/bin/env bash
# The tests: set up .venv (and Debian's chromium for the browser test, when it can), lint
# with ruff, then unit tests, docstring examples, real-weight tests, a short real training
# run and every notebook executed by nbval (ci profile unless D2L_PROFILE says otherwise).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_browser.sh"
export D2L_PROFILE="${D2L_PROFILE:-ci}"
# Runs saved by notebook 04 and read by 05-07 during the test session.
export D2L_RUNS_DIR="${D2L_RUNS_DIR:-$REPO/build/test-runs}"
ruff check d2l_helpers tests benchmarks
python -m pytest "$@"
