#!/bin/sh
# tests/gpu_suite.sh DIR [OUT]: the GPU tests and benchmarks built by tests/gpu_build.sh into DIR, run
# from the repository root on a machine with a GPU (LD_LIBRARY_PATH must reach the CUDA UCX). Each
# part has its own time limit; the full log goes to OUT/gpu.log when OUT is given.
set -u
d=$1
log=${2:-/tmp}/gpu.log
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
run 120 kernels "$d/test_kernels_gpu"
run 120 delta "$d/test_delta_gpu"
run 240 runtime "$d/test_gpu"
run 120 bench-bf16 "$d/bench_gpu" qwen3_4b_bf16_1to1 3 0 0 python3
run 120 bench-fp8 "$d/bench_gpu" qwen3_4b_fp8_1to1 3 0 0 python3
run 150 delta-bench python3 bench/delta_bench.py "$d/libkernels_cuda.so"
run 200 kernels-bench python3 bench/kernels_bench.py "$d/libkernels_cuda.so"
