#!/bin/sh
# test_gen.sh: generator tests: committed reports are current, output is deterministic, every plan
# is built, and each kind of bad description fails with its own located message.
# Run from the repository root after `ninja` has generated build/gen.
lua=$(sed -n 's/^lua = //p' config.ninja)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. reports are current (CI fails when a model or plan changed without `ninja reports`)
for plan in models/plans/*.lua; do
  p=$(basename "$plan" .lua)
  if ! grep -q "build/gen/$p.c " gen/part.ninja; then bad "plan $p is not built by gen/part.ninja"; continue; fi
  if cmp -s "build/gen/$p.txt" "models/reports/$p.txt"; then ok "report $p is current"
  else bad "report $p is out of date: run 'ninja reports' and commit models/reports/$p.txt"
    diff "models/reports/$p.txt" "build/gen/$p.txt" | head -20; fi
done
for r in models/reports/*.txt; do
  [ -f "models/plans/$(basename "$r" .txt).lua" ] || bad "report $r has no plan"
done

# 2. identical input gives byte-identical output, run after run
for p in glm_tiny_demo qwen3_30b_a3b_fp8_ep4; do
  mkdir -p "$tmp/a" "$tmp/b"
  $lua gen/refitgen.lua --plan "models/plans/$p.lua" --out "$tmp/a" &&
    $lua gen/refitgen.lua --plan "models/plans/$p.lua" --out "$tmp/b"
  same=1
  for ext in .c .h _check.c .txt; do
    cmp -s "$tmp/a/$p$ext" "$tmp/b/$p$ext" || same=0
    cmp -s "$tmp/a/$p$ext" "build/gen/$p$ext" || same=0
  done
  if [ $same = 1 ]; then ok "$p: three generator runs give identical bytes"; else bad "$p: generator output differs between runs"; fi
done

# 3. bad descriptions: each gives its own error, naming file and line (and tensor where there is one)
expect() { # plan, expected message
  out=$($lua gen/refitgen.lua --models tests/gen_bad/models:models --plan "tests/gen_bad/plans/$1.lua" --out "$tmp" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF -- "$2"; then ok "$1: $2"
  else bad "$1: expected '$2', got (exit $rc): $out"; fi
}
expect tp_heads "models/families/qwen3.lua:18: tensor 'model.layers.0.self_attn.qkv_proj.weight': tp 8 does not divide its 4 heads"
expect unaligned_fp8_shard "tests/gen_bad/plans/unaligned_fp8_shard.lua:1: plan 'unaligned_fp8_shard': tensor 'model.layers.0.self_attn.q_a_proj.weight': FSDP shard boundary at row 64 (fsdp 4, 64 rows per shard) cuts a 128-row FP8 block of 'model.layers.0.self_attn.fused_qkv_a_proj.weight'"
expect bad_dtype "bad_family.lua:7: tensor 'model.layers.0.norm.weight': unknown dtype 'fp16' (bf16 or fp32)"
expect bad_dst_dtype "bad_family.lua:21: tensor 'model.layers.0.proj.weight': unknown dtype 'int4'"
expect bad_duplicate "bad_family.lua:10: duplicate tensor 'model.layers.0.norm.weight' (first declared at tests/gen_bad/models/families/bad_family.lua:9)"
expect bad_unknown_source "bad_family.lua:13: tensor 'model.layers.0.norm.weight': unknown source tensor 'model.layers.0.nrom.weight'"
expect bad_shape "bad_family.lua:15: tensor 'model.layers.0.proj.weight': dimension 2 is 0, not a positive integer"
expect bad_split "bad_family.lua:18: tensor 'model.layers.0.proj.weight': split must be col, row or rep"
expect missing_model_field "tests/gen_bad/models/glm_no_hidden.lua:1: model 'glm_no_hidden': missing field 'hidden'"
expect missing_plan_field "tests/gen_bad/plans/missing_plan_field.lua:1: plan 'missing_plan_field.inference': missing field 'tp'"
expect fp8_fused_block "models/families/glm_moe_dsa.lua:67: tensor 'model.layers.0.self_attn.fused_qkv_a_proj.weight': fp8 part 'model.layers.0.self_attn.q_a_proj.weight' has 200 rows per rank, not a multiple of 128"
expect bad_ep "tests/gen_bad/plans/bad_ep.lua:1: plan 'bad_ep': ep 4 must be 1 (experts split by TP) or equal tp 2"
expect no_model "tests/gen_bad/plans/no_model.lua:1: model 'glm6' not found"
expect fsdp_zero "tests/gen_bad/plans/fsdp_zero.lua:1: plan 'fsdp_zero.trainer': field 'fsdp' must be an integer >= 1, got 0"
expect name_mismatch "plan name 'other_name' does not match its file name 'name_mismatch'"
expect vocab_tp "models/families/glm_moe_dsa.lua:17: tensor 'model.embed_tokens.weight': 1024 rows not divisible by tp 3"
expect scale_fmt "quant.scale_fmt 'e5m2' is not fp32 or ue8m0"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
