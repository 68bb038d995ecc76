#!/usr/bin/env bash
# Everything that needs CUDA, in one go, in at most 8 minutes (300 s of tests, 150 s of sweep): the CUDA-only tests (a lora/qlora/
# full_ft sweep with the CUDA memory fields, bf16 autocast against fp32, 4-bit QLoRA on the GPU,
# DDP over two GPUs where there are two, the CUDA memory meter), then the records of that sweep
# kept under results/reference/gpu/ with the GPU named.
#
#   scripts/gpu_check.sh [OUT_DIR]     default OUT_DIR: results/reference/gpu
#
# Exits 3 with one line where no CUDA device is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/reference/gpu}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device is visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)')); nothing was run" >&2
  exit 3
fi
gpu=$("$PY" -c "import torch; print(f'{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}')")
echo "gpu_check: $gpu"
mkdir -p "$OUT"
start=$(date +%s)
status=0
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py \
  tests/test_models_configs.py::test_cuda_memory_meter_counts_training_allocations 2>&1 | tee "$OUT/pytest.txt" || status=$?
# the reference sweep, kept: three methods on the GPU, bf16, with every measured column
timeout 150 "$PY" -m peftbench run -m method=lora,qlora,full_ft model=minilm precision=bf16 device=cuda \
  steps=100 seed=0 measure=quick results_dir="$OUT" progress=false 2>&1 | tail -5 || status=$?
{ echo "gpu: $gpu"; echo "torch: $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')";
  echo "date: $(date -u +%FT%TZ)"; echo "seconds: $(( $(date +%s) - start ))"; echo "exit: $status"; } > "$OUT/gpu_check.txt"
cat "$OUT/gpu_check.txt"
exit $status
