#!/bin/sh
# tests/gpu_build.sh UCX_DIR OUT: build the GPU tests and benchmarks against a CUDA-enabled UCX
# (e.g. the libucx-cu13 wheel unpacked, see README "GPU set-up") in a scratch copy of this tree,
# and put the programs into OUT for the device machine. Run from the repository root.
set -eu
ucx=$(cd "$1" && pwd)
out=$2
tmp=$(mktemp -d)
git ls-files -co --exclude-standard | tar -cf - -T - | (cd "$tmp" && tar -xf -)
# only the plans the GPU runs use: the cluster-scale tables would make each program ~100 MB
(cd "$tmp" && rm -f models/plans/glm5_* models/plans/kimi_* models/plans/qwen3_30b_* models/plans/qwen3_8b_* && \
  sh gen/mkplans.sh > gen/plans.ninja && ./configure --with-ucx="$ucx" > /dev/null && \
  ninja build/test_gpu build/bench_gpu build/refit build/test_runtime build/test_kernels_gpu build/test_delta_gpu build/bench_delta \
    build/obj/libkernels_cuda.so > /dev/null && \
  strip build/test_gpu build/bench_gpu build/refit build/test_runtime build/test_kernels_gpu build/test_delta_gpu build/bench_delta)
mkdir -p "$out"
cp "$tmp"/build/test_gpu "$tmp"/build/bench_gpu "$tmp"/build/refit "$tmp"/build/test_runtime "$tmp"/build/test_kernels_gpu "$tmp"/build/test_delta_gpu "$tmp"/build/bench_delta \
  "$tmp"/build/obj/libkernels_cuda.so "$out"/
rm -rf "$tmp"
echo "built into $out"
