#!/bin/sh
# test_megatron.sh: the Megatron-core trainer profile (gen/megatron.lua). Conformance: for each dump of
# real megatron-core 0.16.1 in tests/megatron/dumps (README.md there), the generator's per-rank
# listing of the plan with the same mesh (names, dtypes, shapes of every parameter and buffer each
# rank holds, and every source the tables send) equals the dump, rank by rank. Then bad meshes fail
# with their own located errors. Run from the repository root.
lua=$(sed -n 's/^lua = //p' config.ninja 2>/dev/null)
lua=${lua:-lua5.4}
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# dump folder (tests/megatron/dumps/<tag>)        plan (models/plans)
pairs='
gpt_w2_tp2_pp1_ep1                    megatron_qwen3_tiny_tp2
gpt_w2_tp1_pp2_ep1                    megatron_qwen3_tiny_pp2
gpt_w4_tp2_pp2_ep1                    megatron_qwen3_tiny_tp2_pp2
gpt_w4_tp4_pp1_ep1                    megatron_qwen3_tiny_tp4
moe_seq_w2_tp1_pp1_ep2                megatron_qwen3_moe_tiny_ep2
moe_seq_w4_tp2_pp1_ep2                megatron_qwen3_moe_tiny_tp2_ep2
moe_seq_w4_tp2_pp1_ep2_etp1           megatron_qwen3_moe_tiny_tp2_ep2_etp1
moe_seq_w4_tp1_pp2_ep2                megatron_qwen3_moe_tiny_pp2_ep2
bf16_moe_seq_w2_tp2_pp1_ep1           megatron_qwen3_moe_tiny_tp2_bf16
dpashim_cpupatch_mla_w4_tp2_pp1_ep2   megatron_dsv3_tiny_tp2_ep2
dpashim_cpupatch_mla_w4_tp1_pp2_ep2   megatron_dsv3_tiny_pp2_ep2
'
listed=" $(echo "$pairs" | awk 'NF { printf "%s ", $1 }')"
for d in tests/megatron/dumps/*/; do
  n=$(basename "$d")
  case $listed in *" $n "*) ;; *) bad "megatron dump $n has no plan in tests/test_megatron.sh" ;; esac
done
echo "$pairs" | { while read -r dump plan; do
  [ -n "$dump" ] || continue
  if out=$($lua tests/megatron/conform.lua "models/plans/$plan.lua" "tests/megatron/dumps/$dump" 2>&1); then
    mesh=$(echo "$out" | sed -n 's/^conforms (\(tp [0-9]* pp [0-9]* ep [0-9]*\) etp [0-9]*: \(.*\))$/\1/p')
    rest=$(echo "$out" | sed -n 's/^conforms (\(.*\))$/\1/p')
    echo "ok   megatron: $plan $mesh conforms to $dump ($rest)"
  else
    echo "FAIL megatron: $plan vs $dump"
    echo "$out"
  fi
done; } > "$tmp/conf"
cat "$tmp/conf"
passed=$((passed + $(grep -c '^ok ' "$tmp/conf")))
failed=$((failed + $(grep -c '^FAIL ' "$tmp/conf")))

# the checker finds what differs: a dump with one shape changed and one buffer dropped
mkdir -p "$tmp/d"
cp tests/megatron/dumps/dpashim_cpupatch_mla_w4_tp2_pp1_ep2/rank*.txt "$tmp/d/"
sed -i 's/^\(P decoder.layers.1.mlp.experts.local_experts.1.linear_fc1.weight float32\) \[128, 256\]/\1 [256, 256]/;
  /^B mtp.layers.0.transformer_layer.mlp.router.expert_bias /d' "$tmp/d/rank3.txt"
out=$($lua tests/megatron/conform.lua models/plans/megatron_dsv3_tiny_tp2_ep2.lua "$tmp/d" 2>&1)
rc=$?
if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF "rank 3: 'decoder.layers.1.mlp.experts.local_experts.1.linear_fc1.weight' shape: megatron [256, 256], plan [128, 256]" &&
   printf '%s' "$out" | grep -qF "rank 3: 'mtp.layers.0.transformer_layer.mlp.router.expert_bias' (B float32 [4]) is in the plan, not in megatron"; then
  ok "the megatron checker reports a changed shape and a missing buffer"
else bad "the megatron checker missed a changed shape or a missing buffer (exit $rc): $out"; fi
# and a rank the plan does not have
cp -r tests/megatron/dumps/gpt_w2_tp2_pp1_ep1 "$tmp/g"
cp "$tmp/g/rank1.txt" "$tmp/g/rank2.txt"
out=$($lua tests/megatron/conform.lua models/plans/megatron_qwen3_tiny_tp2.lua "$tmp/g" 2>&1)
if [ $? -ne 0 ] && printf '%s' "$out" | grep -qF "rank2.txt exists: megatron ran more ranks than the plan's 2"; then
  ok "the megatron checker reports a rank the plan lacks"
else bad "the megatron checker missed an extra rank: $out"; fi

# bad meshes: each gives its own error, naming file and line
expect() { # plan, expected message
  out=$($lua gen/refitgen.lua --models tests/gen_bad/models:models --plan "tests/gen_bad/plans/$1.lua" --out "$tmp" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF -- "$2"; then ok "$1: $2"
  else bad "$1: expected '$2', got (exit $rc): $out"; fi
}
expect mg_tp_heads "tests/gen_bad/plans/mg_tp_heads.lua:3: plan 'mg_tp_heads': trainer.megatron.tp: tp 8 does not divide the 4 attention heads of model 'mg_qwen3_tiny'"
expect mg_tp_groups "tests/gen_bad/plans/mg_tp_groups.lua:3: plan 'mg_tp_groups': trainer.megatron.tp: tp 2 does not divide the 3 query groups (kv_heads) of model 'mg_groups3', nor they it"
expect mg_pp_layers "tests/gen_bad/plans/mg_pp_layers.lua:3: plan 'mg_pp_layers': trainer.megatron.pp: pp 3 does not divide the 2 layers of model 'mg_qwen3_tiny'"
expect mg_ep_experts "tests/gen_bad/plans/mg_ep_experts.lua:3: plan 'mg_ep_experts': trainer.megatron.ep: ep 3 does not divide the 4 experts of model 'mg_qwen3_moe_tiny'"
expect mg_ep_dense "tests/gen_bad/plans/mg_ep_dense.lua:3: plan 'mg_ep_dense': trainer.megatron.ep: model 'mg_qwen3_tiny' has no experts: ep must be 1 and etp unset"
expect mg_dp_grid "tests/gen_bad/plans/mg_dp_grid.lua:3: plan 'mg_dp_grid': trainer.megatron.dp: tp 2 x dp 1 = 2 ranks per stage are not a multiple of ep 2 x etp 2 = 4"
expect mg_and_fsdp "tests/gen_bad/plans/mg_and_fsdp.lua:3: plan 'mg_and_fsdp': trainer.fsdp and trainer.megatron exclude each other"
expect mg_no_fsdp "tests/gen_bad/plans/mg_no_fsdp.lua:3: missing key 'trainer.fsdp' (an FSDP2 trainer; or trainer.megatron)"
expect mg_vpp "tests/gen_bad/plans/mg_vpp.lua:3: plan 'mg_vpp': trainer.megatron.vpp: virtual pipeline stages (vpp 2) are not supported yet"
expect mg_spec "tests/gen_bad/plans/mg_spec.lua:3: key 'trainer.megatron.spec' must be 'local' or 'te', got 'transformer_engine'"
expect mg_key "tests/gen_bad/plans/mg_key.lua:3: unknown key 'trainer.megatron.ppp' (did you mean 'pp'?)"
expect mg_cols "tests/gen_bad/plans/mg_cols.lua:3: plan 'mg_cols': tensor 'model.layers.0.self_attn.o_proj.weight' on receiver position 0: columns [0, 256) of 'decoder.layers.0.self_attention.linear_proj.weight' span Megatron tp ranks 0 and 1 (128 columns each)"
expect mg_fp8_block "tests/gen_bad/plans/mg_fp8_block.lua:3: plan 'mg_fp8_block': tensor 'model.layers.0.self_attn.fused_qkv_a_proj.weight' on receiver position 0: rows 256.. come from 'decoder.layers.0.self_attention.linear_kv_down_proj.weight' (tp shard 0) and rows 544.. from 'decoder.layers.0.self_attention.linear_kv_down_proj.weight' (tp shard 1) inside one 128-row FP8 block"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
