#!/usr/bin/env bash
# Create .venv and install adaptlab, its domain plugins and the test tools, pinned by
# constraints.txt (torch and torchvision must be the pinned pair).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
  -e ".[test]" -e domains/wildlife -e domains/medical
