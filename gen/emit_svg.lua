-- emit_svg.lua: a picture of who sends what: a heat map of bytes from each trainer rank (rows) to
-- each receiver (columns), one cell per pair, with per-NIC totals as bars (trainer egress on the
-- right, receiver ingress below).
local U = require("util")
local S = {}

-- 9 shades from light to dark (square root of bytes over the largest cell); class c0 marks pairs
-- that exchange nothing
local SHADES = { "#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b" }

function S.svg(plan, packed)
  local T, R = #packed.ranks, #packed.recv
  local cell = math.max(2, math.min(24, 768 // math.max(T, R)))
  local left, top, bar = 70, 50, 120
  local w, h = math.max(760, left + R * cell + 20 + bar + 20), top + T * cell + 20 + bar + 40
  local pair, max = {}, 0
  for r, rv in ipairs(packed.recv) do
    for k = rv.peer_first + 1, rv.peer_first + rv.peer_count do
      local pe = packed.peers[k]
      pair[pe.trainer * R + (r - 1)] = pe.bytes
      if pe.bytes > max then max = pe.bytes end
    end
  end
  local out_max, in_max = 0, 0
  for _, rk in ipairs(packed.ranks) do out_max = math.max(out_max, rk.bytes_out) end
  for _, rv in ipairs(packed.recv) do in_max = math.max(in_max, rv.bytes) end
  local b = {}
  local function add(fmt, ...) b[#b + 1] = fmt:format(...) end
  add('<?xml version="1.0" encoding="UTF-8"?>\n')
  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">\n', w, h, w, h)
  add("<style>rect.p{width:%dpx;height:%dpx}rect.c0{fill:#ffffff;stroke:#eeeeee;stroke-width:0.2}", cell, cell)
  for i, c in ipairs(SHADES) do add("rect.c%d{fill:%s}", i, c) end
  add("</style>\n")
  add('<text x="%d" y="18" font-size="13">%s: bytes per version from trainer rank (row) to receiver (column); max cell %s</text>\n',
    left, plan.name, U.human(max))
  add('<text x="%d" y="36">%d trainer ranks x %d receivers; bars: per-NIC egress (right) and ingress (below)</text>\n', left, T, R)
  add('<g id="cells">\n')
  for t = 0, T - 1 do
    for r = 0, R - 1 do
      local v = pair[t * R + r] or 0
      local cls = 0
      -- square-root scale, so pairs carrying only small gathered tensors still show
      if v > 0 then cls = math.max(1, math.min(#SHADES, math.ceil(math.sqrt(v / max) * #SHADES))) end
      if T * R <= 4096 then -- hover text only where the file stays small
        add('<rect class="p c%d" x="%d" y="%d"><title>trainer %d -> receiver %d: %s</title></rect>\n', cls,
          left + r * cell, top + t * cell, t, r, U.human(v))
      else
        add('<rect class="p c%d" x="%d" y="%d"/>\n', cls, left + r * cell, top + t * cell)
      end
    end
  end
  add("</g>\n")
  add('<text x="4" y="%d">trainers</text><text x="%d" y="%d">receivers</text>\n', top + 10, left, top + T * cell + 14)
  local bx = left + R * cell + 20
  add('<g id="egress">\n')
  for t, rk in ipairs(packed.ranks) do
    add('<rect x="%d" y="%d" width="%.1f" height="%d" fill="#e6550d"><title>trainer %d: %s out</title></rect>\n', bx,
      top + (t - 1) * cell, out_max > 0 and rk.bytes_out / out_max * bar or 0, math.max(1, cell - 1), t - 1, U.human(rk.bytes_out))
  end
  add('</g>\n<text x="%d" y="%d">egress, max %s</text>\n', bx, top - 4, U.human(out_max))
  local by = top + T * cell + 20
  add('<g id="ingress">\n')
  for r, rv in ipairs(packed.recv) do
    local hh = in_max > 0 and rv.bytes / in_max * bar or 0
    add('<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="#31a354"><title>receiver %d: %s in</title></rect>\n',
      left + (r - 1) * cell, by + bar - hh, math.max(1, cell - 1), hh, r - 1, U.human(rv.bytes))
  end
  add('</g>\n<text x="%d" y="%d">ingress, max %s</text>\n', left, by + bar + 16, U.human(in_max))
  add("</svg>\n")
  return table.concat(b)
end

return S
