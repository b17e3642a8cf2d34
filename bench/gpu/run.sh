#!/usr/bin/env bash
# RadVLM-sized GPU benchmark (random weights of the real architecture; see radvlm_gpu.py).
#
# On the lent GPU machine, from the repo root (its own python3 has torch and transformers; nothing
# else of this project is needed, nothing is downloaded):
#     bash bench/gpu/run.sh                 # ~2-4 min on an H200; table on stdout, JSON + log in $OUT
# Here, to check the script on a CPU in under a minute:
#     bash bench/gpu/run.sh --tiny --device cpu --repeats 1 --warmup 0
# Optional: faiss-cpu wheels in .whl/ (see ../.library/device/README.md) make the CPU side FAISS
# instead of torch-on-CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1 && PY=.venv/bin/python
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/faiss_cpu-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
out=${OUT:-bench/results}
mkdir -p "$out"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_machine.txt"
"$PY" bench/gpu/radvlm_gpu.py --json "$out/gpu_bench.json" "$@" 2>&1 | tee "$out/gpu_bench.log"
