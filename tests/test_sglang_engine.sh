#!/bin/sh
# test_sglang_engine.sh: refit into a real SGLang 0.5.23 engine on this CPU (tests/sglang/real_engine.py):
# for the tiny Qwen3 and Qwen3-MoE plans of SGLang's CPU platform (engine.device = "cpu"), an engine on
# checkpoint A, trainers push B's fp32 masters through refit.sglang (SGLang's weight-update session),
# and greedy tokens and logprobs of two prompts must equal a fresh engine's on B and differ from A's.
# Before that, refit.sglang's MLA finalize hook calls SGLang's own post_load_weights (real_engine.py
# post_load_check: exactly the steps' layers rebuilt; no engine, the CPU platform runs no MLA).
# SGLang comes from a venv kept by tests/venv.sh sglang (PyPI, once: about 6 GB to download, 11 GB);
# PyPI's sgl_kernel links libcuda.so.1 (it is never called on the CPU platform): the test builds a
# stand-in with the C compiler, one function per driver entry point sgl_kernel's libraries name, each
# returning CUDA_ERROR_NO_DEVICE, so no CUDA installation is needed. Where the venv cannot be made the
# test says so and is skipped, except under CI=true, where it fails. About 3 to 5 minutes on 2 cores
# (four engine starts).
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
vpy=$(sh tests/venv.sh sglang) || skip "no venv with SGLang 0.5.23 (tests/venv.sh sglang could not make it)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc=$(sed -n 's/^cc = //p' config.ninja)
kern=$("$vpy" -c 'import importlib.util as u, os; print(os.path.dirname(u.find_spec("sgl_kernel").origin))') ||
  skip "no sgl_kernel in $vpy"
for so in "$kern"/*/*.so "$kern"/*.so; do [ -f "$so" ] && nm -D --undefined-only "$so"; done |
  awk '$2 ~ /^cu[A-Z]/ { sub(/@.*/, "", $2); print $2 }' | sort -u |
  awk '{ printf "int %s(void);\nint %s(void) { return 100; }\n", $1, $1 }' > "$tmp/cuda_stand_in.c"
[ -s "$tmp/cuda_stand_in.c" ] || skip "found no CUDA driver entry points in $kern's libraries"
"${cc:-cc}" -shared -fPIC -o "$tmp/libcuda.so.1" "$tmp/cuda_stand_in.c" -Wl,-soname,libcuda.so.1 ||
  skip "could not build the libcuda.so.1 stand-in"
SGLANG_USE_CPU_ENGINE=1 LD_LIBRARY_PATH=$tmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PYTHONPATH=$PWD/build/python \
  PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore "$vpy" tests/sglang/real_engine.py \
  sglang_qwen3_bf16_tp1_cpu tests/vllm/configs/qwen3 sglang_qwen3moe_bf16_tp1_cpu tests/vllm/configs/qwen3moe
