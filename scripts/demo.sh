#!/usr/bin/env bash
# Set up, then adapt ImageNet EfficientNet-Lite0 to the real animal photos (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out="runs/wildlife-demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/adaptlab run wildlife --out "$out" "$@"
echo "metrics: $out/metrics.json  costs: $out/costs.json"
