#!/usr/bin/env bash
# GPU check for a lent NVIDIA GPU (see benchmarks/gpu_check.py): at most 8 minutes, one JSON.
# Needs: torch with CUDA (+ torchvision), numpy, opencv-python-headless, cuda-bindings; cupy optional.
# No TensorRT, no ONNX Runtime GPU and no network are needed. Run from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT when set, else benchmarks/results)
# Record what ran (and only that) in benchmarks/RESULTS.md, "GPU check".
set -u
cd "$(dirname "$0")/.."
out_dir="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out_dir"
py="${PYTHON:-python3}"
{ nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1 || true; } \
  | tee "$out_dir/gpu_check.nvidia-smi.txt"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" timeout 480 "$py" benchmarks/gpu_check.py \
  --json "$out_dir/gpu_check.json" 2>&1 | tee "$out_dir/gpu_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "gpu_check: stopped at the 8-minute limit" | tee -a "$out_dir/gpu_check.log"
exit "$rc"
