#!/bin/sh
# tests/gpu_suite.sh DIR [OUT [PART]]: the GPU tests and benchmarks built by tests/gpu_build.sh into
# DIR, run from the repository root on a machine with a GPU (LD_LIBRARY_PATH must reach the CUDA UCX;
# PYTHONPATH the Python module, `ninja python`, for the Python parts). Each part has its own time
# limit; the full log goes to OUT/gpu.log when OUT is given. PART: tests (kernels, runtime and delta
# tests, kernel and delta benchmarks, the 8 GB plan last), python (gpu_e2e dense, delta and through
# refit.vllm and refit.sglang; measured delta density; the runtime benchmarks), or all (default: both and the kernel
# benchmarks against PyTorch and Triton; about 20 minutes).
set -u
d=$1
log=${2:-/tmp}/gpu.log
part=${3:-all}
: > "$log"
run() { # run LIMIT_S NAME CMD...: one part, its output kept, the last lines shown
  limit=$1 name=$2
  shift 2
  echo "== $name" | tee -a "$log"
  timeout "$limit" "$@" >> "$log" 2>&1
  echo "(exit $?)" >> "$log"
  sed -n '/^== '"$name"'$/,$p' "$log" | grep -v 'UCX  WARN' | tail -n 14
}
nvidia-smi -L | tee -a "$log"
if [ "$part" = tests ] || [ "$part" = all ]; then
  run 120 kernels "$d/test_kernels_gpu"
  run 120 delta "$d/test_delta_gpu"
  run 200 runtime env RF_GPU_BIG=0 "$d/test_gpu"
  run 150 delta-bench python3 bench/delta_bench.py "$d/libkernels_cuda.so"
  run 120 bench-delta-bf16 "$d/bench_delta" qwen3_4b_bf16_1to1 4 --cuda 0 0
  run 120 bench-delta-fp8 "$d/bench_delta" qwen3_4b_fp8_1to1 4 --cuda 0 0
  run 400 runtime-8gb "$d/test_gpu" "(8 GB)"
fi
if [ "$part" = python ] || [ "$part" = all ]; then
  run 200 e2e python3 tests/gpu_e2e.py
  run 200 e2e-delta python3 tests/gpu_e2e.py --delta --versions 4
  run 150 e2e-vllm python3 tests/gpu_e2e.py --vllm
  run 150 e2e-sglang python3 tests/gpu_e2e.py --sglang --receivers cuda
  run 240 delta-density python3 bench/delta_density.py --steps 3 --lib "$d/libkernels_cuda.so"
  run 120 bench-bf16 "$d/bench_gpu" qwen3_4b_bf16_1to1 3 0 0 python3
  run 120 bench-fp8 "$d/bench_gpu" qwen3_4b_fp8_1to1 3 0 0 python3
fi
[ "$part" = all ] && run 200 kernels-bench python3 bench/kernels_bench.py "$d/libkernels_cuda.so"
exit 0
