-- engine.lua: the inference engine a plan writes into (plan.engine), checked against the profiles
-- the generator knows. A profile fixes how the engine holds its weights after loading: names,
-- aliases, vocabulary padding, derived-tensor layouts (families ask it through engine.*).
--
--   engine = { name = "vllm", version = ">=0.33,<0.34",   -- the only profile so far
--              w13 = "gate_up",          -- FusedMoE w13 halves: "gate_up" (vLLM's loader) or "up_gate"
--              mtp = true,               -- send MTP layers into vLLM's drafter (false: leave them out)
--              indexer_fusion = true,    -- DSA indexer [wk; weights_proj] fused (vLLM >= 0.33)
--              moe_backend = "triton", sm = 90, eplb = false,
--              expert_placement = "linear",  -- or "round_robin" (models with expert_groups > 1)
--              sleep_mode = false }
-- Settings that make the engine move or repack weights after loading are refused here, naming the
-- setting: a static table cannot follow them.
local U = require("util")
local M = {}

-- Versions each profile covers: [lo, hi) as {major, minor, patch}; the evidence is the parameter
-- dumps of vLLM 0.33.0 on SM90 (tests/vllm/dumps).
local PROFILES = {
  vllm = { lo = { 0, 33, 0 }, hi = { 0, 34, 0 }, covers = "0.33.x" },
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
    local v = parse_version(ver)
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
  U.fail(plan.__site, "plan '%s': engine.%s: " .. fmt, plan.name, setting, ...)
end

function M.check(plan)
  local e = plan.engine
  if type(e) ~= "table" then
    U.fail(plan.__site, "plan '%s': missing field 'engine' (e.g. engine = { name = \"vllm\", version = \">=0.33,<0.34\" })",
      plan.name)
  end
  local prof = PROFILES[e.name]
  if not prof then
    refuse(plan, "name", "'%s' has no profile (known: vllm)", tostring(e.name))
  end
  if type(e.version) ~= "string" then refuse(plan, "version", "missing (e.g. \">=0.33,<0.34\")") end
  local lo, hi = parse_range(e.version)
  if not lo then refuse(plan, "version", "'%s' is not a version range like \">=0.33,<0.34\"", e.version) end
  if lo >= hi then refuse(plan, "version", "'%s' admits no version", e.version) end
  if lo < vnum(prof.lo) or hi > vnum(prof.hi) then
    refuse(plan, "version", "'%s' admits versions the %s profile does not cover (%s)", e.version, e.name, prof.covers)
  end
  e.w13 = e.w13 or "gate_up"
  if e.w13 ~= "gate_up" and e.w13 ~= "up_gate" then
    refuse(plan, "w13", "'%s' is not gate_up or up_gate", tostring(e.w13))
  end
  e.moe_backend = e.moe_backend or "triton"
  if MOE_REPACK[e.moe_backend] then
    refuse(plan, "moe_backend", "'%s' %s; a static table cannot follow (serve with --moe-backend triton)",
      e.moe_backend, MOE_REPACK[e.moe_backend])
  elseif not MOE_KEEP[e.moe_backend] then
    refuse(plan, "moe_backend", "'%s': no parameter dump shows how it holds the weights after loading (the %s "
      .. "profile verifies triton on SM90)", tostring(e.moe_backend), e.name)
  end
  e.sm = e.sm or 90
  if e.sm ~= 90 then
    refuse(plan, "sm", "%s: the %s profile covers SM90 (H100/H200); on SM100 DeepGEMM repacks FP8 scales into "
      .. "UE8M0 int32 after loading", tostring(e.sm), e.name)
  end
  if e.eplb then
    refuse(plan, "eplb", "EPLB adds redundant experts and moves experts between ranks at run time; a static "
      .. "table cannot follow (serve with enable_eplb off)")
  end
  -- linear: E//ep experts each, the remainder to the first ranks; round_robin: rank r holds experts
  -- r, r+ep, ... (vLLM determine_expert_map), which vLLM applies only to models with expert groups
  e.expert_placement = e.expert_placement or "linear"
  local m = plan.__model
  if e.expert_placement == "round_robin" then
    if (m.expert_groups or 1) <= 1 then
      refuse(plan, "expert_placement", "'round_robin' needs the model's expert_groups > 1 (vLLM falls back to "
        .. "linear placement for model '%s', which has %d)", m.name, m.expert_groups or 1)
    end
  elseif e.expert_placement ~= "linear" then
    refuse(plan, "expert_placement", "'%s' is not linear or round_robin", tostring(e.expert_placement))
  end
  if e.sleep_mode then
    refuse(plan, "sleep_mode", "sleep mode frees and re-maps the weights (CUDA virtual memory): bound "
      .. "addresses do not survive it")
  end
  if e.mtp ~= nil and type(e.mtp) ~= "boolean" then refuse(plan, "mtp", "must be true or false") end
  if e.indexer_fusion ~= nil and type(e.indexer_fusion) ~= "boolean" then
    refuse(plan, "indexer_fusion", "must be true or false")
  end
  return e
end

return M
