#!/bin/sh
# test_schema.sh: every plan table's columns are written once, in gen/schema.lua (STYLE.md habit 13).
#  1. runtime/include/refit_tables.h (the structs and column lists, committed) is what the schema
#     generates now.
#  2. No generator file, runtime/plan.c or public header spells a table's columns: no run of 5
#     consecutive columns of one table (all of one of 4), in schema order, within 16 identifiers (a column comment, a positional row, a
#     format string, a hand-written hash). Named values (`slot = w.slot`, `.slot = x` in a row
#     macro the emitter builds from the schema) are not a spelling of the order: a key and the same
#     name in its value are skipped.
# tests/test_schema.sh [FILE...]: check these files instead of the usual set (the test of the test).
set -u
cd "$(dirname "$0")/.."
lua=${LUA:-lua5.4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
if [ $# -eq 0 ]; then
  if $lua gen/schema.lua "$tmp/refit_tables.h" && cmp -s "$tmp/refit_tables.h" runtime/include/refit_tables.h; then
    echo "ok   runtime/include/refit_tables.h is what gen/schema.lua generates"; pass=$((pass + 1))
  else
    echo "FAIL runtime/include/refit_tables.h differs from gen/schema.lua's output (run: $lua gen/schema.lua runtime/include/refit_tables.h)"
    fail=$((fail + 1))
  fi
  # the generator, the layout hash and the public header: where the column orders were written
  set -- $(ls gen/*.lua runtime/plan.c runtime/include/*.h | grep -v -e '^gen/schema.lua$' -e '^runtime/include/refit_tables.h$')
fi
# the column lists, one table a line: "name col col ..."
$lua -e 'package.path = "gen/?.lua;" .. package.path
  local S = require("schema")
  for _, t in ipairs(S.tables) do
    local c = {}
    for _, f in ipairs(t.fields) do c[#c + 1] = f[1] end
    print(t.name .. " " .. table.concat(c, " "))
  end' > "$tmp/cols" || { echo "FAIL gen/schema.lua does not load"; exit 1; }
if python3 - "$tmp/cols" "$@" <<'PY'
import re, sys
tables = [l.split() for l in open(sys.argv[1]).read().splitlines()]
WINDOW = 16
bad = 0
for path in sys.argv[2:]:
    text = open(path).read()
    toks = []  # (identifier, line) after dropping keys of `key =` and the key's name in its value
    key, line = None, 1
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*|==|[=,;{}\n]", text):
        t = m.group()
        if t == "\n": line += 1; continue
        if t in (",", ";", "{", "}"): key = None; continue
        if t in ("=", "=="): continue
        after = text[m.end():m.end() + 3]
        if re.match(r"\s*=(?!=)", after):
            key = t
            continue
        if t == key: continue
        toks.append((t, line))
    names = [t for t, _ in toks]
    for tb in tables:
        name, cols = tb[0], tb[1:]
        RUN = min(5, len(cols))
        if RUN < 4: continue  # two or three names in order say nothing
        pos = {c: k for k, c in enumerate(cols)}
        for i, t in enumerate(names):
            if t not in pos: continue
            want, j = pos[t] + 1, i + 1
            got = 1
            while j < len(names) and j - i < WINDOW and want < len(cols) and got < RUN:
                if names[j] == cols[want]: want += 1; got += 1
                j += 1
            if got >= RUN:
                print(f"FAIL {path}:{toks[i][1]}: table {name}'s columns spelled outside gen/schema.lua: "
                      f"{' '.join(cols[pos[t]:pos[t] + RUN])}")
                bad += 1
                break
print(f"{'ok  ' if not bad else 'FAIL'} {len(sys.argv) - 2} files name no table's column order outside gen/schema.lua"
      + ("" if not bad else f" ({bad} spellings)"))
sys.exit(1 if bad else 0)
PY
then pass=$((pass + 1)); else fail=$((fail + 1)); fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
