#!/usr/bin/env bash
# Run the test suite. The HTML viewer's test drives a headless Chromium; install it when missing and
# possible (root or sudo), else that one test skips with a reason. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; the viewer's browser test will skip"
  fi
fi
# The layer order and the import circles (pyproject.toml's contracts), before the tests.
lint-imports
exec python -m pytest -q "$@"
