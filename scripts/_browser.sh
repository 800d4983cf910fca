# Sourced by test.sh: Debian's Chromium for tests/test_browser.py (never `playwright install`).
# As root with apt-get it is installed when missing (about 20 s); otherwise the browser test
# skips with its reason, except under CI (CI=true), where it fails.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the browser test (apt-get, as root) ..."
    start=$SECONDS
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; then
      echo "installed $(/usr/bin/chromium --version 2>/dev/null) in $((SECONDS - start)) s"
    else
      echo "Could not install chromium with apt-get: tests/test_browser.py will skip (CI=true fails it)."
    fi
  else
    echo "No /usr/bin/chromium and no root apt-get to install it: tests/test_browser.py will skip."
    echo "  To run it: sudo apt-get install chromium (Debian/Ubuntu), then run this command again."
  fi
fi
