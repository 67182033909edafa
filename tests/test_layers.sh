#!/bin/sh
# test_layers.sh: the runtime's files call one way (runtime/internal.h draws the layers): from the
# symbols each object defines and references, no cycle of calls between runtime files. And each
# file's state is its own: a private struct (the roles', the patch area's, UCX's, CUDA's) is defined
# in its owner file only (elsewhere it is opaque, so the compiler refuses a read of its fields), only
# the owner follows the engine's pointer to it, and struct rf_engine (internal.h) declares none of
# their fields. Usage: tests/test_layers.sh [runtime dir] (another dir: to see the checks fail).
dir=${1:-runtime}
exec python3 - "$dir" build/obj/runtime/*.o <<'PY'
import re, subprocess, sys, os
src, objs_in = sys.argv[1], sys.argv[2:]
passed = failed = 0
def result(ok, text):
    global passed, failed
    print(("ok   " if ok else "FAIL ") + text)
    passed += ok
    failed += not ok

objs = {}
for o in objs_in:
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
result(not found, "a cycle of calls between runtime files: " + " -> ".join(found) if found
       else f"{len(objs)} runtime files call one way (no cycle)")

def strip(text):  # comments and strings out: only code is checked
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)
files = {f: strip(open(os.path.join(src, f)).read()) for f in sorted(os.listdir(src)) if f.endswith((".c", ".h"))}
owners = {"rf__trainer": "trainer.c", "rf__receiver": "receiver.c", "rf__patch": "patch.c", "rf__delta": "delta_push.c",
          "rf__ucx": "ucx.c",
          "rf__cuda": "cuda.c"}
def body(text, name):  # the field declarations of `struct name { ... }`, nested braces included
    m = re.search(r"\bstruct\s+%s\s*\{" % name, text)
    if not m: return None
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end():i - 1]
def fields(decls):  # names declared at the top level of a struct body, `int a, *b[4];` and `int (*f)(...)` too
    flat = re.sub(r"\{[^{}]*\}", " ", re.sub(r"\{[^{}]*\}", " ", decls))
    names = set()
    for d in flat.split(";"):
        fp = re.search(r"\(\s*\*\s*(\w+)\s*\)\s*\(", d)
        if fp:
            names.add(fp.group(1))
            continue
        for piece in re.sub(r"\[[^\]]*\]", "", d).split(","):
            m = re.search(r"(\w+)\s*$", piece.strip())
            if m: names.add(m.group(1))
    return names
private = {}
for name, owner in owners.items():
    where = [f for f, t in files.items() if body(t, name) is not None]
    if owner in files: result(where == [owner], f"struct {name} is defined in {owner} only" + (f" (also: {', '.join(w for w in where if w != owner)})" if where != [owner] else ""))
    b = body(files.get(owner, ""), name)
    if b: private[name] = fields(b)
for ptr, owner in (("tr", "trainer.c"), ("rx", "receiver.c")):
    users = [f for f, t in files.items() if f != owner and re.search(r"->\s*%s\b" % ptr, t)]
    result(not users, f"only {owner} follows rf_engine.{ptr}" + (f" (also: {', '.join(users)})" if users else ""))
head = fields(body(files.get("internal.h", ""), "rf_engine") or "")
common = {"cfg", "p", "err", "ctr", "ux", "cu", "mem", "step", "prog", "mu", "changed", "owner"}
leaked = sorted((head - common) & set().union(*private.values())) if private else []
result(not leaked and "tr" in head and "rx" in head,
       f"struct rf_engine (internal.h) holds the common head and the role pointers, {len(head)} fields" +
       (f"; role fields in it: {', '.join(leaked)}" if leaked else ""))
print(f"{passed} passed, {failed} failed")
sys.exit(failed != 0)
PY
