#!/usr/bin/env bash
# Device check on one GPU, no hub: full fine-tuning, LoRA and QLoRA for a few steps each on random-init
# Llama models of ~0.5B and ~1.5B parameters (batch 4 x 512 tokens), written as one JSON: step time,
# tokens/s, CUDA peaks vs the estimator per category, the optimizer that ran and whether it paged, the
# bitsandbytes build and kernels. Under 8 minutes on one H200.
#   scripts/gpu_check.sh                       # -> reports/device_check.json
#   scripts/gpu_check.sh --out /tmp/check.json
#   scripts/gpu_check.sh --cpu-smoke           # tiny models on the CPU: every path but the CUDA-only calls
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
exec "${PYTHON:-.venv/bin/python}" -m bench.device_check "$@"
