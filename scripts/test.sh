#!/usr/bin/env bash
# Set up, lint, then run the whole test suite (slow tests included; GPU tests skip without one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src domains tests bench
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
