#!/bin/sh
# test_import_hf.sh: refit import-hf. Configs of the committed models (tests/fixtures/hf/models,
# written from ../shared/MODELS.md) import to models equal to the committed ones, field by field,
# and give the same plan layout hashes; the real-architecture configs the vLLM dumps were made from
# (tests/fixtures/hf/vllm) import and generate; every refusal has its exact message.
# Run from the repository root after `ninja` has built build/refit and build/gen.
lua=$(sed -n 's/^lua = //p' config.ninja)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf

# the fields of a model description (everything but comments), one 'key = value' a line
cat > "$tmp/fields.lua" <<'EOT'
local f = assert(loadfile(arg[1], "t", { model = function(t) return t end }))()
local keys = {}
for k in pairs(f) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do print(k .. " = " .. tostring(f[k])) end
EOT
fields() { $lua "$tmp/fields.lua" "$1"; }

# 1. configs of the committed models: the same model, and (one plan each) the same layout hash
mkdir -p "$tmp/models"
for m in glm5 glm_tiny kimi_k2 qwen3_30b_a3b qwen3_4b qwen3_8b qwen3_moe_tiny qwen3_tiny; do
  if ./build/refit import-hf "$fx/models/$m/config.json" --name "$m" --out "$tmp/models" > "$tmp/out" 2>&1 &&
    fields "models/$m.lua" > "$tmp/want" && fields "$tmp/models/$m.lua" > "$tmp/got" && cmp -s "$tmp/want" "$tmp/got"
  then ok "import-hf $m: the fields of models/$m.lua"
  else bad "import-hf $m: $(cat "$tmp/out")"; diff "$tmp/want" "$tmp/got" | head -10; fi
done
m=dsv3_tiny
if ./build/refit import-hf "$fx/vllm/dsv3/config.json" --name $m --out "$tmp/models" > /dev/null 2>&1 &&
  cmp -s "$tmp/models/$m.lua" "models/$m.lua"; then ok "import-hf $m: byte for byte models/$m.lua"
else bad "import-hf $m differs from models/$m.lua"; fi
for p in glm5_fp8_64x4 kimi_k2_fp8_256x8 qwen3_30b_a3b_fp8_ep4 qwen3_4b_bf16 qwen3_8b_fp8_tp4 glm_tiny_demo \
    qwen3_moe_tiny_ep2 qwen3_tiny_tp2 dsv3_tiny_mtp; do
  mkdir -p "$tmp/gen"
  $lua gen/refitgen.lua --models "$tmp/models:models" --plan "models/plans/$p.lua" --out "$tmp/gen" 2> "$tmp/err"
  want=$(sed -n 's/^layout_hash: //p' "build/gen/$p.txt")
  got=$(sed -n 's/^layout_hash: //p' "$tmp/gen/$p.txt" 2>/dev/null)
  if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "$p from the imported model: layout hash $got"
  else bad "$p from the imported model: layout hash '$got', committed model gives '$want' $(cat "$tmp/err")"; fi
done

# 2. the real-architecture configs: import, the fp8 variant gives the same model, and a plan builds
# (TP1: with head_dim 64 their TP2 qkv_proj puts a 128-row FP8 block across k and v)
for d in qwen3 qwen3moe dsv3 glm5; do
  n=$(echo "$d" | tr - _)
  for v in "$d" "$d-fp8"; do
    mkdir -p "$tmp/$v"
    ./build/refit import-hf "$fx/vllm/$v/config.json" --name "$n" --out "$tmp/$v" > "$tmp/err" 2>&1
  done
  mkdir -p "$tmp/plans"
  cat > "$tmp/plans/${n}_t.lua" <<EOT
return plan { name = "${n}_t", model = "$n", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  quant = { fp8 = true } }
EOT
  if [ -f "$tmp/$d/$n.lua" ] && fields "$tmp/$d/$n.lua" > "$tmp/a" && fields "$tmp/$d-fp8/$n.lua" > "$tmp/b" &&
    cmp -s "$tmp/a" "$tmp/b" &&
    $lua gen/refitgen.lua --models "$tmp/$d:models" --plan "$tmp/plans/${n}_t.lua" --out "$tmp" 2> "$tmp/err"
  then ok "import-hf vllm/$d and vllm/$d-fp8: one model, an FP8 plan generates"
  else bad "import-hf vllm/$d: $(cat "$tmp/err")"; fi
done

# 3. refusals, each with its message; CONFIG is a fixture edited by sed
refuse() { # fixture, sed script, expected message (after 'refit import-hf: ')
  sed "$2" "$fx/$1" > "$tmp/config.json"
  out=$(./build/refit import-hf "$tmp/config.json" --name x --out "$tmp" 2>&1)
  rc=$?
  want="refit import-hf: $tmp/config.json$3"
  if [ $rc -ne 0 ] && [ "$out" = "$want" ] && [ ! -f "$tmp/x.lua" ]; then ok "refused: ${3#: }"
  else bad "expected '$want', got (exit $rc): $out"; fi
  rm -f "$tmp/x.lua"
}
refuse vllm/qwen3/config.json 's/Qwen3ForCausalLM/LlamaForCausalLM/' ": field 'architectures' = [\"LlamaForCausalLM\"]: not an architecture refit knows (DeepseekV3ForCausalLM, GlmMoeDsaForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)"
refuse vllm/dsv3/config.json 's/"q_lora_rank": 256/"q_lora_rank": null/' ": field 'q_lora_rank' = null: the family describes a low-rank query (q_a_proj, q_a_layernorm, q_b_proj), not a full-rank q_proj"
refuse vllm/qwen3/config.json 's/"attention_bias": false/"attention_bias": true/' ": field 'attention_bias' = true: the family has no q/k/v/o_proj bias tensors (refit handles only false)"
refuse vllm/glm5/config.json 's/"attention_bias": false/"attention_bias": true/' ": field 'attention_bias' = true: the family has no q/k/v/o_proj bias tensors (refit handles only false)"
refuse vllm/qwen3moe/config.json 's/"decoder_sparse_step": 1/"decoder_sparse_step": 2/' ": field 'decoder_sparse_step' = 2: the family makes every layer MoE (it has no dense MLP layers) (refit handles only 1)"
refuse vllm/qwen3moe/config.json 's/"mlp_only_layers": \[\]/"mlp_only_layers": [0]/' ": field 'mlp_only_layers' = [0]: the family makes every layer MoE (it has no dense MLP layers) (refit handles only [])"
refuse vllm/dsv3/config.json 's/"n_shared_experts": 1/"n_shared_experts": null/' ": field 'n_shared_experts' = null: the family describes MoE layers with shared experts (mlp.shared_experts)"
refuse vllm/dsv3/config.json 's/"n_shared_experts": 1/"n_shared_experts": 0/' ": field 'n_shared_experts' = 0: must be an integer >= 1"
refuse vllm/dsv3/config.json 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' ": field 'tie_word_embeddings' = true: the family has its own lm_head.weight (refit handles only false)"
refuse vllm/dsv3/config.json 's/"moe_layer_freq": 1/"moe_layer_freq": 2/' ": field 'moe_layer_freq' = 2: the family makes every layer from first_k_dense_replace on MoE (refit handles only 1)"
refuse vllm/glm5/config.json 's/"noaux_tc"/"greedy"/' ": field 'topk_method' = \"greedy\": the family describes mlp.gate.e_score_correction_bias, which the engine has only for noaux_tc routing (refit handles only \"noaux_tc\")"
refuse models/glm5/config.json '0,/"sparse"/s/"sparse"/"dense"/' ": field 'mlp_layer_types' = [78 items]: layer 3 is \"dense\", but the family makes layers below first_k_dense_replace (3) dense and the others MoE (\"sparse\")"
refuse vllm/qwen3/config.json 's/"head_dim": 64,/"head_dim": 64, "use_qk_norm": false,/' ": field 'use_qk_norm' = false: not a field refit knows for Qwen3ForCausalLM, so it cannot tell whether it changes the weight layout (if it does not, list it as neutral in gen/import_hf.lua)"
refuse vllm/qwen3/config.json '/"head_dim"/d' ": field 'head_dim' is missing: must be an integer >= 1"
refuse vllm/qwen3/config.json 's/"hidden_size": 256/"hidden_size": 256.0/' ": field 'hidden_size' = 256.0: must be an integer >= 1"
refuse vllm/qwen3/config.json 's/"tie_word_embeddings": false/"tie_word_embeddings": "no"/' ": field 'tie_word_embeddings' = \"no\": must be true or false"
refuse vllm/qwen3/config.json 's/"eos_token_id": 2/"eos_token_id": 2,/' ":22:1: bad JSON: expected a string key"
refuse vllm/qwen3/config.json 's/"eos_token_id": 2/"eos_token_id": 2, "head_dim": 128/' ":21:21: bad JSON: duplicate key 'head_dim'"
refuse vllm/qwen3/config.json 's/}/} x/' ":22:3: bad JSON: text after the value"

# 4. the command line: an existing model is not overwritten, names are checked, usage
out=$(./build/refit import-hf "$fx/vllm/qwen3/config.json" --name qwen3_tiny 2>&1)
if [ $? -ne 0 ] && [ "$out" = "refit import-hf: models/qwen3_tiny.lua exists: remove it first or choose another --name" ] &&
  git diff --quiet -- models/qwen3_tiny.lua; then ok "an existing models/qwen3_tiny.lua is kept"
else bad "existing model: $out"; fi
out=$(./build/refit import-hf "$fx/vllm/qwen3/config.json" --name Qwen-3 --out "$tmp" 2>&1)
if [ $? -ne 0 ] && [ "$out" = "refit import-hf: model name 'Qwen-3' must be lower-case letters, digits and '_', starting with a letter" ]
then ok "model name checked"; else bad "bad name: $out"; fi
./build/refit import-hf "$fx/vllm/qwen3/config.json" > "$tmp/out" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q '^usage: refit import-hf CONFIG.json --name N' "$tmp/out"; then ok "no --name: usage, exit 2"
else bad "no --name: exit $rc: $(cat "$tmp/out")"; fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
