#!/bin/sh
# tests/gpu_build.sh UCX_DIR OUT: build the GPU tests and benchmarks against a CUDA-enabled UCX
# (e.g. the libucx-cu13 wheel unpacked, see README "GPU set-up") in a scratch copy of this tree,
# and put the programs into OUT for the device machine. Run from the repository root.
set -eu
ucx=$(cd "$1" && pwd)
out=$2
tmp=$(mktemp -d)
git ls-files -co --exclude-standard | tar -cf - -T - | (cd "$tmp" && tar -xf -)
# what tests/gpu_suite.sh runs (the runtime's host tests and the CLI run here, not there)
progs="test_gpu bench_gpu test_kernels_gpu test_delta_gpu bench_delta"
# only the plans the GPU runs use: the cluster-scale tables would make each program ~100 MB
(cd "$tmp" && rm -f models/plans/glm5_* models/plans/kimi_* models/plans/qwen3_30b_* models/plans/qwen3_8b_* && \
  sh gen/mkplans.sh > gen/plans.ninja && ./configure --with-ucx="$ucx" > /dev/null && \
  ninja $(for p in $progs; do echo build/$p; done) build/obj/libkernels_cuda.so > /dev/null && \
  (cd build && strip $progs))
mkdir -p "$out"
for p in $progs obj/libkernels_cuda.so; do cp "$tmp/build/$p" "$out"/; done
rm -rf "$tmp"
echo "built into $out"
