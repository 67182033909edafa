#!/bin/sh
# test_examples_sglang.sh: examples/sglang_rl_step.py as a user runs it on a machine without a GPU:
# one RL step of DeepSeek-V3 (tests/vllm/configs/dsv3, MLA, experts, TP2): two FSDP2 trainer ranks
# on the CPU over gloo (fp32 masters, one AdamW step) push version 1 into two stand-ins of SGLang
# 0.5.23's TP workers (tests/sglang/dumps) bound through refit.sglang. Passes when the example says
# ok: the session ran pause -> begin -> arm/wait -> end -> continue, each worker's receiver ran the
# model's post_load_weights inside arm/wait, before version 1 was complete (its finalize hook), and
# every worker holds the engine format of the trainer's new weights byte for byte (all of the plan's
# bytes), with w_kc / w_vc rebuilt. torch and transformers come from the venv of tests/venv.sh trainer; where that
# cannot be made the test says so and is skipped, except under CI=true, where it fails.
set -u
cd "$(dirname "$0")/.." || exit 1
plan=sglang_dsv3_bf16_tp2 config=tests/vllm/configs/dsv3
if ! vpy=$(sh tests/venv.sh trainer); then
  if [ "${CI:-}" = true ]; then echo "FAIL no venv with torch and transformers (tests/venv.sh trainer)"; echo "0 passed, 1 failed"; exit 1; fi
  echo "skipped: the SGLang RL-step example needs torch and transformers (tests/venv.sh trainer could not install them)"
  echo "0 passed, 0 failed"
  exit 0
fi
export PYTHONPATH=$PWD/build/python PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
timeout 1200 "$vpy" examples/sglang_rl_step.py $plan $config > "$tmp" 2>&1
rc=$?
bytes=$("$vpy" -c "import refit; print(refit.Plan('$plan').total_bytes)")
want="ok $plan: one RL step, 2 FSDP2 ranks (fp32 masters, AdamW) pushed version 1 into 2 SGLang TP workers: pause -> begin -> arm/wait(post_load_weights before complete) -> end -> continue; $bytes bytes equal to the engine format of the new weights, 12 w_kc/w_vc rebuilt from kv_b_proj"
if [ "$rc" = 0 ] && [ "$(grep "^ok " "$tmp")" = "$want" ]; then
  echo "ok   examples/sglang_rl_step.py: $want"
  echo "1 passed, 0 failed"
  exit 0
fi
echo "FAIL examples/sglang_rl_step.py $plan: exit $rc; want the line: $want"
tail -n 40 "$tmp"
echo "0 passed, 1 failed"
exit 1
