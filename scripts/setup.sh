#!/usr/bin/env bash
# Set up dualdistill from a clean checkout: the sandbox's isolation tool, a CPU torch, the package.
# The README's first command and .ci/run both call this, so they cannot drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

# bubblewrap gives the sandbox its network/PID/mount namespaces; without it the sandbox uses unshare.
if ! command -v bwrap >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap) \
      || echo "warning: could not install bubblewrap; the sandbox will fall back to unshare"
  else
    echo "warning: bubblewrap missing and no root; install it for the strongest sandbox isolation"
  fi
fi

# Install torch first: 2.13.0 resolves to the CPU build here; the project's range accepts it, so pip
# does not fetch a CUDA build afterwards. On a GPU machine, install your CUDA torch before this script.
python -c "import torch" 2>/dev/null || pip install torch==2.13.0
pip install -e ".[test]"
