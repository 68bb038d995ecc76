#!/usr/bin/env bash
# Sweep scaling on this machine (see scripts/scaling.py). Full measurement (idle machine, ~minutes):
#   scripts/scaling.sh
# Smoke test:
#   scripts/scaling.sh --steps 1 --methods lora,linear_probe --sizes 1,2 --model tiny-llama --out /tmp/scaling.json
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-.venv/bin/python}" scripts/scaling.py "$@"
