-- import_hf.lua: write a model description (models/<name>.lua) from a Hugging Face config.json of a
-- known architecture, refusing any field whose value changes the weight layout in a way the family
-- does not describe, and any field it does not know.
--
--   lua5.4 gen/import_hf.lua CONFIG.json --name N [--out DIR]     (refit import-hf runs this)
-- Writes DIR/N.lua (DIR defaults to models) and refuses to overwrite one that exists.

-- ---------------------------------------------------------------------------------------------
-- A strict JSON reader (RFC 8259): no comments, no trailing commas, no duplicate keys; integers
-- (no fraction or exponent) become Lua integers; null is JSON.null; arrays and objects are tables
-- marked by JSON.kind.
local JSON = { null = setmetatable({}, { __tostring = function() return "null" end }), kind = {} }

function JSON.decode(text, path)
  local pos = 1
  local function fail(msg)
    local line, col = 1, 1
    for i = 1, math.min(pos, #text + 1) - 1 do
      if text:byte(i) == 10 then line, col = line + 1, 1 else col = col + 1 end
    end
    error({ refit = ("%s:%d:%d: bad JSON: %s"):format(path, line, col, msg) }, 0)
  end
  local function ws() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
  local function hex4()
    local h = text:match("^\\u(%x%x%x%x)", pos)
    if not h then fail("bad \\u escape") end
    pos = pos + 6
    return tonumber(h, 16)
  end
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local j = text:find('["\\%z\1-\31]', pos)
      if not j then fail("unterminated string") end
      out[#out + 1] = text:sub(pos, j - 1)
      pos = j
      local c = text:sub(j, j)
      if c == '"' then pos = j + 1; return table.concat(out) end
      if c ~= "\\" then fail("control character in a string") end
      local e = text:sub(j + 1, j + 1)
      if ESC[e] then
        out[#out + 1], pos = ESC[e], j + 2
      elseif e == "u" then
        local cp = hex4()
        if cp >= 0xDC00 and cp <= 0xDFFF then fail("lone low surrogate") end
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = hex4()
          if lo < 0xDC00 or lo > 0xDFFF then fail("high surrogate without its low half") end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
        end
        out[#out + 1] = utf8.char(cp)
      else
        fail("bad escape '\\" .. e .. "'")
      end
    end
  end
  local function num()
    local start = pos
    if text:sub(pos, pos) == "-" then pos = pos + 1 end
    local a, b = text:find("^0", pos)
    if not a then a, b = text:find("^[1-9]%d*", pos) end
    if not a then fail("bad number") end
    pos = b + 1
    local integer = true
    a, b = text:find("^%.%d+", pos)
    if a then pos, integer = b + 1, false elseif text:sub(pos, pos) == "." then fail("bad number") end
    a, b = text:find("^[eE][-+]?%d+", pos)
    if a then pos, integer = b + 1, false elseif text:find("^[eE]", pos) then fail("bad number") end
    local tok = text:sub(start, pos - 1)
    if not integer then return tonumber(tok) end
    local v = math.tointeger(tonumber(tok))
    if not v then pos = start; fail("integer " .. tok .. " out of range") end
    return v
  end
  local value
  local function list(close, item)
    pos = pos + 1
    ws()
    if text:sub(pos, pos) == close then pos = pos + 1; return end
    while true do
      item()
      ws()
      local c = text:sub(pos, pos)
      if c == close then pos = pos + 1; return end
      if c ~= "," then fail("expected ',' or '" .. close .. "'") end
      pos = pos + 1
      ws()
    end
  end
  function value()
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      local t = {}
      JSON.kind[t] = "object"
      list("}", function()
        if text:sub(pos, pos) ~= '"' then fail("expected a string key") end
        local at = pos
        local k = str()
        if t[k] ~= nil then pos = at; fail("duplicate key '" .. k .. "'") end
        ws()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        t[k] = value()
      end)
      return t
    elseif c == "[" then
      local t = {}
      JSON.kind[t] = "array"
      list("]", function() t[#t + 1] = value() end)
      return t
    elseif c == '"' then
      return str()
    elseif c == "-" or c:match("%d") then
      return num()
    end
    for _, w in ipairs({ { "true", true }, { "false", false }, { "null", JSON.null } }) do
      if text:sub(pos, pos + #w[1] - 1) == w[1] then pos = pos + #w[1]; return w[2] end
    end
    fail(c == "" and "unexpected end" or ("unexpected '" .. c .. "'"))
  end
  local v = value()
  ws()
  if pos <= #text then fail("text after the value") end
  return v
end

local EMPTY_LIST = setmetatable({}, { __tostring = function() return "[]" end })

-- A value as JSON writes it, for messages.
local function show(v)
  if v == EMPTY_LIST then return "[]" end
  if type(v) == "string" then return ('"%s"'):format(v) end
  if type(v) ~= "table" or v == JSON.null then return tostring(v) end
  local parts = {}
  if JSON.kind[v] == "array" then
    if #v > 8 then return ("[%d items]"):format(#v) end
    for _, x in ipairs(v) do parts[#parts + 1] = show(x) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  return "{...}"
end

-- ---------------------------------------------------------------------------------------------
-- The architectures refit knows. Per architecture:
--   fields: { hf name, model key, kind } copied into the model; kind "int" (>= 1), "int0" (>= 0),
--           "bool"; every one is required (null or absent refused with `null_why` when given).
--   fixed:  { hf name, value, why } the only value (or absence, when `absent_ok`) the family
--           describes (EMPTY_LIST: []); any other value is refused with `why`.
--   neutral: fields that do not change the weight layout (numerics, routing, rope, token ids, the
--           checkpoint's quantization: the plan decides what the engine gets).
-- Any other field is refused: refit cannot tell whether it changes the layout.
local NEUTRAL = {
  "architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
  "use_cache", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
  "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
  "hidden_act", "attention_dropout", "quantization_config", "auto_map",
}

local QWEN3_NEUTRAL = { "max_window_layers", "sliding_window", "use_sliding_window", "layer_types" }
local function qwen3_common()
  return {
    { "hidden_size", "hidden", "int" }, { "num_hidden_layers", "layers", "int" },
    { "num_attention_heads", "heads", "int" }, { "num_key_value_heads", "kv_heads", "int" },
    { "head_dim", "head_dim", "int" },
  }
end
local NO_BIAS = { "attention_bias", false, "the family has no q/k/v/o_proj bias tensors", absent_ok = true }

local function mla(indexer)
  local f = {
    { "hidden_size", "hidden", "int" }, { "num_hidden_layers", "layers", "int" },
    { "num_nextn_predict_layers", "mtp_layers", "int0" }, { "first_k_dense_replace", "first_dense", "int" },
    { "num_attention_heads", "heads", "int" },
    { "q_lora_rank", "q_lora_rank", "int",
      null_why = "the family describes a low-rank query (q_a_proj, q_a_layernorm, q_b_proj), not a full-rank q_proj" },
    { "kv_lora_rank", "kv_lora_rank", "int" },
    { "qk_nope_head_dim", "qk_nope_head_dim", "int" }, { "qk_rope_head_dim", "qk_rope_head_dim", "int" },
    { "v_head_dim", "v_head_dim", "int" },
  }
  if indexer then
    f[#f + 1] = { "index_n_heads", "index_heads", "int" }
    f[#f + 1] = { "index_head_dim", "index_head_dim", "int" }
  end
  for _, x in ipairs({
    { "n_routed_experts", "experts", "int" },
    { "n_shared_experts", "shared_experts", "int",
      null_why = "the family describes MoE layers with shared experts (mlp.shared_experts)" },
    { "num_experts_per_tok", "experts_per_token", "int" },
    { "moe_intermediate_size", "moe_intermediate", "int" }, { "intermediate_size", "intermediate", "int" },
    { "vocab_size", "vocab", "int" },
  }) do f[#f + 1] = x end
  return {
    family = indexer and "glm_moe_dsa" or "deepseek_v3",
    fields = f,
    fixed = {
      NO_BIAS,
      { "tie_word_embeddings", false, "the family has its own lm_head.weight", absent_ok = true },
      { "moe_layer_freq", 1, "the family makes every layer from first_k_dense_replace on MoE", absent_ok = true },
      { "topk_method", "noaux_tc",
        "the family describes mlp.gate.e_score_correction_bias, which the engine has only for noaux_tc routing" },
    },
    neutral = { "num_key_value_heads", "n_group", "topk_group", "routed_scaling_factor", "scoring_func",
      "norm_topk_prob", "ep_size", "aux_loss_alpha", "seq_aux", "pretraining_tp", "rope_interleave", "head_dim",
      "qk_head_dim", "index_topk", "indexer_rope_interleave", "mlp_layer_types" },
  }
end

local ARCH = {
  Qwen3ForCausalLM = {
    family = "qwen3",
    fields = (function()
      local f = qwen3_common()
      for _, x in ipairs({ { "intermediate_size", "intermediate", "int" }, { "vocab_size", "vocab", "int" },
        { "tie_word_embeddings", "tie_word_embeddings", "bool" } }) do f[#f + 1] = x end
      return f
    end)(),
    fixed = { NO_BIAS },
    neutral = QWEN3_NEUTRAL,
  },
  Qwen3MoeForCausalLM = {
    family = "qwen3_moe",
    fields = (function()
      local f = qwen3_common()
      for _, x in ipairs({ { "num_experts", "experts", "int" }, { "num_experts_per_tok", "experts_per_token", "int" },
        { "moe_intermediate_size", "moe_intermediate", "int" }, { "vocab_size", "vocab", "int" },
        { "tie_word_embeddings", "tie_word_embeddings", "bool" } }) do f[#f + 1] = x end
      return f
    end)(),
    fixed = {
      NO_BIAS,
      { "decoder_sparse_step", 1, "the family makes every layer MoE (it has no dense MLP layers)", absent_ok = true },
      { "mlp_only_layers", EMPTY_LIST, "the family makes every layer MoE (it has no dense MLP layers)", absent_ok = true },
    },
    -- intermediate_size is the dense MLP's, which no layer has when every layer is MoE
    neutral = { "intermediate_size", "norm_topk_prob", "output_router_logits", "router_aux_loss_coef",
      table.unpack(QWEN3_NEUTRAL) },
  },
  DeepseekV3ForCausalLM = mla(false),
  GlmMoeDsaForCausalLM = mla(true),
}

local function is(v, want)
  if want == EMPTY_LIST then return JSON.kind[v] == "array" and #v == 0 end
  return v == want and math.type(v) == math.type(want)
end

local function import(cfg, path)
  local function refuse(field, fmt, ...)
    local v = cfg[field]
    error({ refit = ("%s: field '%s' %s: %s"):format(path, field, v == nil and "is missing" or ("= " .. show(v)),
      fmt:format(...)) }, 0)
  end
  if JSON.kind[cfg] ~= "object" then error({ refit = path .. ": not a JSON object" }, 0) end
  local archs = cfg.architectures
  if JSON.kind[archs] ~= "array" or #archs ~= 1 or type(archs[1]) ~= "string" then
    refuse("architectures", "must be a list of one architecture name")
  end
  local known = {}
  for k in pairs(ARCH) do known[#known + 1] = k end
  table.sort(known)
  local a = ARCH[archs[1]]
  if not a then
    refuse("architectures", "not an architecture refit knows (%s)", table.concat(known, ", "))
  end
  local used = {}
  for _, n in ipairs(NEUTRAL) do used[n] = true end
  for _, n in ipairs(a.neutral) do used[n] = true end
  local m = { name = nil, family = a.family, fields = {} }
  for _, f in ipairs(a.fields) do
    local hf, key, kind = f[1], f[2], f[3]
    local v = cfg[hf]
    used[hf] = true
    if v == JSON.null and f.null_why then refuse(hf, "%s", f.null_why) end
    if kind == "bool" then
      if type(v) ~= "boolean" then refuse(hf, "must be true or false") end
    elseif math.type(v) ~= "integer" or v < (kind == "int0" and 0 or 1) then
      refuse(hf, "must be an integer >= %d", kind == "int0" and 0 or 1)
    end
    m.fields[#m.fields + 1] = { key, v, hf }
  end
  for _, f in ipairs(a.fixed) do
    local hf, want, why = f[1], f[2], f[3]
    used[hf] = true
    local v = cfg[hf]
    if not (v == nil and f.absent_ok) and not is(v, want) then
      refuse(hf, "%s (refit handles only %s)", why, show(want))
    end
  end
  -- mlp_layer_types (GLM): must say what first_k_dense_replace says
  local types = cfg.mlp_layer_types
  if types ~= nil then
    if JSON.kind[types] ~= "array" or #types ~= cfg.num_hidden_layers then
      refuse("mlp_layer_types", "must list the %d layers", cfg.num_hidden_layers)
    end
    for i, t in ipairs(types) do
      local want = i <= cfg.first_k_dense_replace and "dense" or "sparse"
      if t ~= want then
        refuse("mlp_layer_types", "layer %d is %s, but the family makes layers below first_k_dense_replace (%d) "
          .. "dense and the others MoE (\"sparse\")", i - 1, show(t), cfg.first_k_dense_replace)
      end
    end
  end
  local keys = {}
  for k in pairs(cfg) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not used[k] then
      refuse(k, "not a field refit knows for %s, so it cannot tell whether it changes the weight layout "
        .. "(if it does not, list it as neutral in gen/import_hf.lua)", archs[1])
    end
  end
  return m, archs[1]
end

local function render(m, arch, from)
  local L = { ("-- %s (%s), written by refit import-hf from %s."):format(m.name, arch, from),
    "return model {", ('  name = "%s", family = "%s",'):format(m.name, m.family) }
  for _, f in ipairs(m.fields) do
    L[#L + 1] = ("  %-30s -- %s"):format(("%s = %s,"):format(f[1], tostring(f[2])), f[3])
  end
  L[#L + 1] = "}"
  return table.concat(L, "\n") .. "\n"
end

local function main(argv)
  local cfg_path, name, out = nil, nil, "models"
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if (a == "--name" or a == "--out") and argv[i + 1] then
      if a == "--name" then name = argv[i + 1] else out = argv[i + 1] end
      i = i + 2
    elseif a:sub(1, 1) ~= "-" and not cfg_path then
      cfg_path, i = a, i + 1
    else
      cfg_path = nil
      break
    end
  end
  if not cfg_path or not name then
    io.stderr:write("usage: refit import-hf CONFIG.json --name N [--out DIR]   (writes DIR/N.lua, DIR: models)\n")
    return 2
  end
  if not name:match("^[a-z][a-z0-9_]*$") then
    error({ refit = ("model name '%s' must be lower-case letters, digits and '_', starting with a letter"):format(name) }, 0)
  end
  local f = io.open(cfg_path, "rb")
  if not f then error({ refit = ("cannot read '%s'"):format(cfg_path) }, 0) end
  local text = f:read("a")
  f:close()
  local m, arch = import(JSON.decode(text, cfg_path), cfg_path)
  m.name = name
  local dest = out .. "/" .. name .. ".lua"
  f = io.open(dest, "rb")
  if f then
    f:close()
    error({ refit = ("%s exists: remove it first or choose another --name"):format(dest) }, 0)
  end
  -- the config's path as given, without the directories above its own when absolute
  local from = cfg_path:sub(1, 1) == "/" and cfg_path:match("([^/]+/[^/]+)$") or cfg_path
  local tmp = dest .. ".tmp"
  f = io.open(tmp, "wb")
  if not f then error({ refit = ("cannot write '%s'"):format(tmp) }, 0) end
  f:write(render(m, arch, from))
  f:close()
  assert(os.rename(tmp, dest))
  print(("wrote %s (%s, family %s)"):format(dest, arch, m.family))
  return 0
end

local ok, res = pcall(main, arg)
if not ok then
  io.stderr:write("refit import-hf: ", type(res) == "table" and res.refit or ("internal error: " .. tostring(res)), "\n")
  os.exit(1)
end
os.exit(res)
