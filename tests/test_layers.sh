#!/bin/sh
# test_layers.sh: the runtime's files call one way (runtime/internal.h draws the layers): from the
# symbols each object defines and references, no cycle of calls between runtime files.
exec python3 - build/obj/runtime/*.o <<'PY'
import subprocess, sys
objs = {}
for o in sys.argv[1:]:
    syms = [l.split() for l in subprocess.run(["nm", o], capture_output=True, text=True).stdout.splitlines()]
    objs[o.split("/")[-1]] = ({s[2] for s in syms if len(s) == 3 and s[1] in "TDRB"},
                              {s[1] for s in syms if len(s) == 2 and s[0] == "U"})
calls = {a: sorted(b for b in objs if b != a and objs[a][1] & objs[b][0]) for a in objs}
def cycle(a, path):
    for b in calls[a]:
        if b in path: return path[path.index(b):] + [b]
        c = cycle(b, path + [b])
        if c: return c
    return None
found = next((c for a in sorted(objs) for c in [cycle(a, [a])] if c), None)
for a in sorted(calls): print(f"     {a:16s} calls {', '.join(calls[a]) or '-'}")
if found:
    print("FAIL a cycle of calls between runtime files: " + " -> ".join(found) + "\n0 passed, 1 failed")
    sys.exit(1)
print(f"ok   {len(objs)} runtime files call one way (no cycle)\n1 passed, 0 failed")
PY
