#!/bin/sh
# test_sglang_engine.sh: refit into a real SGLang 0.5.23 engine on this CPU (tests/sglang/real_engine.py):
# for the tiny Qwen3 and Qwen3-MoE plans of SGLang's CPU platform (engine.device = "cpu"), an engine on
# checkpoint A, trainers push B's fp32 masters through refit.sglang (SGLang's weight-update session),
# and greedy tokens and logprobs of two prompts must equal a fresh engine's on B and differ from A's.
# SGLang comes from a venv kept by tests/sglang_venv.sh (PyPI, once: about 6 GB to download, 11 GB);
# PyPI's sgl_kernel loads libcuda.so.1, which CUDA's stub library serves (CUDA_STUB_DIR, default
# $CUDA_HOME/lib64/stubs). Where either is missing the test says so and is skipped, except under
# CI=true, where it fails. About 3 to 5 minutes on 2 cores (four engine starts).
set -u
cd "$(dirname "$0")/.." || exit 1
skip() {
  if [ "${CI:-}" = true ]; then echo "FAIL $1"; echo "0 passed, 1 failed"; exit 1; fi
  echo "skipped: $1"
  echo "0 passed, 0 failed"
  exit 0
}
for p in sglang_qwen3_bf16_tp1_cpu sglang_qwen3moe_bf16_tp1_cpu; do
  [ -f "build/gen/$p.c" ] || skip "plan $p is not in this build's plan set (./configure --plans=...)"
done
stubs=${CUDA_STUB_DIR:-${CUDA_HOME:-/usr/local/cuda}/lib64/stubs}
[ -f "$stubs/libcuda.so" ] || skip "no CUDA stub library at $stubs/libcuda.so (PyPI's sgl_kernel loads libcuda.so.1; set CUDA_STUB_DIR)"
vpy=$(sh tests/sglang_venv.sh) || skip "no venv with SGLang 0.5.23 (tests/sglang_venv.sh could not make it)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ln -s "$stubs/libcuda.so" "$tmp/libcuda.so.1"
SGLANG_USE_CPU_ENGINE=1 LD_LIBRARY_PATH=$tmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PYTHONPATH=$PWD/build/python \
  PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore "$vpy" tests/sglang/real_engine.py \
  sglang_qwen3_bf16_tp1_cpu tests/vllm/configs/qwen3 sglang_qwen3moe_bf16_tp1_cpu tests/vllm/configs/qwen3moe
