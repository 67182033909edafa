-- values.lua: check, row by row, that a Megatron plan's tables copy the right weights. For every row
-- of every destination, the plan's segment names a Megatron parameter on a rank, a local row and a
-- column range; an inverse mapping written here from the Megatron side (the way an exporter such as
-- Megatron-Bridge converts to HF names: TP-gather, un-interleave linear_qkv per query group, split
-- linear_fc1 per TP shard into gate and up, local -> global expert ids, stage-local -> global layers)
-- turns that into an HF tensor, row and column; it must equal what the same plan derives for an
-- FSDP2 trainer (HF names directly). Prints the first differences, then "equal" or "differs".
--
--   lua5.4 tests/megatron/values.lua PLAN [max_shown] [strided]
-- strided: a control; the inverse numbers experts j * ep + ep_rank (the wrong numbering ../shared/
-- megatron/README.md section 2 rules out by a forward pass), which must differ on an EP plan.
package.path = "gen/?.lua;" .. package.path
local L = require("load")
local D = require("derive")
local Mg = require("megatron")

local path, max_shown, control = arg[1], tonumber(arg[2] or "10"), arg[3]
local plan = L.plan(path)
local m = plan.__model
local mg = plan.trainer.megatron
local mgmodel = D.derive(plan)
-- the same plan with an FSDP2 trainer of HF per-expert modules: destination rows by HF names
local hfplan = L.plan(path)
hfplan.trainer.megatron = nil
local hfmodel = D.derive(hfplan)

-- HF name, row and column of rank r's Megatron parameter `name`, local row x, local column y.
local function to_hf(r, name, x, y)
  local c = Mg.coords(mg, r)
  local function glob(l) return mg.stage_first[c.pp] + l end
  local prefix, rest
  local l, tail = name:match("^decoder%.layers%.(%d+)%.(.+)$")
  if l then prefix, rest = ("model.layers.%d."):format(glob(tonumber(l))), tail
  else
    local k, t2 = name:match("^mtp%.layers%.(%d+)%.(.+)$")
    if k then
      prefix = ("model.layers.%d."):format(m.layers + tonumber(k))
      rest = t2:match("^transformer_layer%.(.+)$")
      if not rest then
        local own = { ["enorm.weight"] = "enorm.weight", ["hnorm.weight"] = "hnorm.weight",
          ["final_layernorm.weight"] = "shared_head.norm.weight" }
        if own[t2] then return prefix .. own[t2], x, y end
        if t2 == "eh_proj.weight" then return prefix .. "eh_proj.weight", c.tp * (m.hidden // mg.tp) + x, y end
        return nil
      end
    end
  end
  local tp = c.tp
  if not prefix then
    local per = mg.padded_vocab // mg.tp
    if name == "embedding.word_embeddings.weight" then return "model.embed_tokens.weight", tp * per + x, y end
    if name == "output_layer.weight" then return "lm_head.weight", tp * per + x, y end
    if name == "decoder.final_layernorm.weight" then return "model.norm.weight", x, y end
    return nil
  end
  local function fc1(I, g, grank, to)
    local per = I // g
    local half, i = x // per, grank * per + x % per
    return to .. (half == 0 and "gate_proj.weight" or "up_proj.weight"), i, y
  end
  local j, which = rest:match("^mlp%.experts%.local_experts%.(%d+)%.linear_fc(%d)%.weight$")
  if not j then which, j = rest:match("^mlp%.experts%.linear_fc(%d)%.weight(%d+)$") end
  if j then
    local e = c.ep * (m.experts // mg.ep) + tonumber(j)
    if control == "strided" then e = tonumber(j) * mg.ep + c.ep end
    local to = ("%smlp.experts.%d."):format(prefix, e)
    if which == "1" then return fc1(m.moe_intermediate, mg.etp, c.etp, to) end
    return to .. "down_proj.weight", x, c.etp * (m.moe_intermediate // mg.etp) + y
  end
  local a = "self_attn."
  if rest == "self_attention.linear_qkv.weight" then
    local d, G = m.head_dim, m.kv_heads
    local qpg = m.heads // G
    local X = tp * (G * (qpg + 2) * d // mg.tp) + x
    local g, w = X // ((qpg + 2) * d), X % ((qpg + 2) * d)
    if w < qpg * d then return prefix .. a .. "q_proj.weight", g * qpg * d + w, y end
    if w < (qpg + 1) * d then return prefix .. a .. "k_proj.weight", g * d + w - qpg * d, y end
    return prefix .. a .. "v_proj.weight", g * d + w - (qpg + 1) * d, y
  end
  if rest == "self_attention.linear_proj.weight" then
    local C = m.q_lora_rank and m.heads * m.v_head_dim or m.heads * m.head_dim
    return prefix .. a .. "o_proj.weight", x, tp * (C // mg.tp) + y
  end
  if rest == "mlp.linear_fc1.weight" then return fc1(m.intermediate, mg.tp, tp, prefix .. "mlp.") end
  if rest == "mlp.linear_fc2.weight" then return prefix .. "mlp.down_proj.weight", x, tp * (m.intermediate // mg.tp) + y end
  local I = m.shared_experts and m.moe_intermediate * m.shared_experts
  if rest == "mlp.shared_experts.linear_fc1.weight" then return fc1(I, mg.tp, tp, prefix .. "mlp.shared_experts.") end
  if rest == "mlp.shared_experts.linear_fc2.weight" then
    return prefix .. "mlp.shared_experts.down_proj.weight", x, tp * (I // mg.tp) + y
  end
  local split_rows = { -- column-parallel: contiguous row chunks per TP rank
    ["self_attention.linear_q_up_proj.weight"] = { "q_b_proj.weight", m.heads * ((m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0)) },
    ["self_attention.linear_kv_up_proj.weight"] = { "kv_b_proj.weight", m.heads * ((m.qk_nope_head_dim or 0) + (m.v_head_dim or 0)) },
  }
  if mg.spec ~= "te" then
    split_rows["self_attention.linear_q_down_proj.weight"] = { "q_a_proj.weight", m.q_lora_rank }
    split_rows["self_attention.linear_kv_down_proj.weight"] = { "kv_a_proj_with_mqa.weight",
      (m.kv_lora_rank or 0) + (m.qk_rope_head_dim or 0) }
  end
  local sr = split_rows[rest]
  if sr then return prefix .. a .. sr[1], tp * (sr[2] // mg.tp) + x, y end
  local same = {
    ["self_attention.linear_q_down_proj.weight"] = a .. "q_a_proj.weight",
    ["self_attention.linear_kv_down_proj.weight"] = a .. "kv_a_proj_with_mqa.weight",
    ["self_attention.q_layernorm.weight"] = m.q_lora_rank and a .. "q_a_layernorm.weight" or a .. "q_norm.weight",
    ["self_attention.k_layernorm.weight"] = a .. "k_norm.weight",
    ["self_attention.kv_layernorm.weight"] = a .. "kv_a_layernorm.weight",
    ["self_attention.linear_q_up_proj.layer_norm_weight"] = a .. "q_a_layernorm.weight",
    ["self_attention.linear_kv_up_proj.layer_norm_weight"] = a .. "kv_a_layernorm.weight",
    ["input_layernorm.weight"] = "input_layernorm.weight",
    ["self_attention.linear_qkv.layer_norm_weight"] = "input_layernorm.weight",
    ["pre_mlp_layernorm.weight"] = "post_attention_layernorm.weight",
    ["mlp.linear_fc1.layer_norm_weight"] = "post_attention_layernorm.weight",
    ["mlp.router.weight"] = "mlp.gate.weight",
    ["mlp.router.expert_bias"] = "mlp.gate.e_score_correction_bias",
    ["self_attention.core_attention.indexer.linear_wq_b.weight"] = a .. "indexer.wq_b.weight",
    ["self_attention.core_attention.indexer.linear_wk.weight"] = a .. "indexer.wk.weight",
    ["self_attention.core_attention.indexer.linear_weights_proj.weight"] = a .. "indexer.weights_proj.weight",
    ["self_attention.core_attention.indexer.k_norm.weight"] = a .. "indexer.k_norm.weight",
    ["self_attention.core_attention.indexer.k_norm.bias"] = a .. "indexer.k_norm.bias",
  }
  if same[rest] then return prefix .. same[rest], x, y end
  return nil
end

-- Every row of every canonical destination: { [dst] = { [item*rows + row] = "hf row col0+cols" } }, a
-- row's column pieces (a row-parallel shard into a wider engine slice) joined where they continue.
local function rows_of(model, describe)
  local out = {}
  for _, d in ipairs(model.dsts) do
    if #d.segs > 0 then
      local t = {}
      out[d.tp_rank .. " " .. d.name] = t
      for _, seg in ipairs(d.segs) do
        for k = 0, seg.srows - 1 do
          local key = seg.item * d.item_rows + seg.irow0 + k
          local l = t[key] or {}
          t[key] = l
          local name, row, col = describe(seg, k)
          l[#l + 1] = { dcol = seg.dcol0 or 0, name = name, row = row, col = col, cols = seg.scols }
        end
      end
      for key, l in pairs(t) do
        table.sort(l, function(p, q) return p.dcol < q.dcol end)
        local parts, cur = {}, nil
        for _, x in ipairs(l) do
          if cur and cur.name == x.name and cur.row == x.row and cur.col + cur.cols == x.col
            and cur.dcol + cur.cols == x.dcol then cur.cols = cur.cols + x.cols
          else cur = { dcol = x.dcol, name = x.name, row = x.row, col = x.col, cols = x.cols }; parts[#parts + 1] = cur end
        end
        local s2 = {}
        for i, x in ipairs(parts) do
          s2[i] = ("%s row %s cols %s+%d at %d"):format(tostring(x.name), tostring(x.row), tostring(x.col), x.cols, x.dcol)
        end
        t[key] = table.concat(s2, "; ")
      end
    end
  end
  return out
end

local want = rows_of(hfmodel, function(seg, k) return seg.src.name, seg.srow0 + k, seg.scol0 end)
local bad = 0
local got = rows_of(mgmodel, function(seg, k)
  local s = seg.src
  local name, row, col = to_hf(s.holder, s.name, seg.srow0 + k, seg.scol0)
  if not name then bad = bad + 1; return ("(no HF tensor for rank %d's '%s')"):format(s.holder, s.name) end
  return name, row, col
end)
local diffs, n = {}, 0
for _, key in ipairs((function() local k = {} for x in pairs(want) do k[#k + 1] = x end table.sort(k) return k end)()) do
  local w, g = want[key], got[key] or {}
  for row, v in pairs(w) do
    n = n + 1
    if g[row] ~= v then diffs[#diffs + 1] = ("%s row %d: megatron sends %s, want %s"):format(key, row, tostring(g[row]), v) end
  end
  for row in pairs(g) do
    if not w[row] then diffs[#diffs + 1] = ("%s row %d: megatron writes a row the FSDP2 plan does not"):format(key, row) end
  end
end
for key in pairs(got) do if not want[key] then diffs[#diffs + 1] = key .. ": written only by the megatron plan" end end
table.sort(diffs)
for i = 1, math.min(#diffs, max_shown) do print(diffs[i]) end
if #diffs > 0 then print(("differs: %d of %d rows"):format(#diffs, n)) os.exit(1) end
print(("equal (%d destination rows, %d sources on %d ranks)"):format(n, #mgmodel.srcs, mg.world))
