#!/usr/bin/env bash
# Every GPU figure issue 34 asks for, in one run on a GPU machine (about 10 minutes on one H100):
#   1. the gpu-marked tests (QLoRA in bf16 on CUDA among them)        -> $OUT/gpu_tests.xml
#   2. trial-runner throughput, fp32 vs bf16 vs fp16                   -> results/gpu_precision.json
#   3. the memory model on CUDA rows it was not fitted on              -> results/memory_model_cuda_new.json
#   4. trials per hour: packed by predicted memory vs one at a time vs
#      Ray Tune with fractional GPUs, same trials                     -> results/gpu_packing.json
#   5. data-parallel overhead, 2 GPUs vs 1 (only with >= 2 GPUs)       -> results/data_parallel_cuda.json
# Each step has its own time limit and a failed step does not stop the others; the summary at
# the end says which ran. Usage (repository root, after `make install`):
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu_suite}"
mkdir -p "$OUT"
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
declare -A RC
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -25
  RC[$name]="${PIPESTATUS[0]} in $((SECONDS - t0))s"
}
step gpu_tests 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml"
step precision 150 "$PY" benchmarks/gpu_throughput.py precision --train 4000
step memory_new 150 "$PY" benchmarks/memory_model.py --device cuda --rows new
step packing 300 "$PY" benchmarks/gpu_throughput.py packing --trials 8 --train 2000
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "${GPUS:-0}" -ge 2 ]; then
  step data_parallel 240 "$PY" benchmarks/data_parallel.py --device cuda --workers 2 --train 4000 --repeats 1
else
  RC[data_parallel]="skipped: $GPUS GPU(s), NCCL needs one per rank"
fi
cp benchmarks/results/gpu_*.json benchmarks/results/memory_model_cuda_new.json \
   benchmarks/results/data_parallel_cuda.json "$OUT"/ 2>/dev/null
echo "== summary (exit status, time)"
for k in gpu_tests precision memory_new packing data_parallel; do echo "$k: ${RC[$k]:-not run}"; done \
  | tee "$OUT/summary.txt"
