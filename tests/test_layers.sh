#!/bin/sh
# test_layers.sh: the code's layers hold. Run from the repository root after `ninja build/log/runtime.log`'s
# inputs are built (build/refit, librefit.a, librefit.so, the Python module, build/obj/libharness.a).
#  1. the runtime's files call one way (runtime/internal.h draws the layers): from the symbols each object
#     defines and references, no cycle of calls between runtime files;
#  2. no product (build/refit, build/librefit.a, build/librefit.so, the Python extension) is built from
#     anything under tests/: no input (`ninja -t inputs`), no compile flag naming tests/ (`ninja -t
#     commands`), no source whose #includes reach a header under tests/, and none defines a global symbol
#     of the test harness (nm of build/obj/libharness.a);
#  3. no cycle of #includes between top-level folders (tests -> cli -> tests was one);
#  4. each runtime file's state is its own: a private struct (the roles', the patch area's, the delta
#     encoder's, UCX's, CUDA's) is defined in its owner file only (elsewhere it is opaque, so the compiler
#     refuses a read of its fields), only the owner follows the engine's pointer to it, and struct rf_engine
#     (internal.h) declares none of their fields.
# Checks 2 and 3 first show on a known-bad input that they can fail (a harness user; a tree with the old
# cycle). Usage: tests/test_layers.sh [runtime dir]: check 4 reads that dir's sources (default runtime;
# another dir, e.g. a copy with a role field moved back into rf_engine, to see check 4 fail).
dir=${1:-runtime}
exec python3 - "$dir" build/obj/runtime/*.o <<'PY'
import glob, os, re, subprocess, sys, tempfile
src, objs_in = sys.argv[1], sys.argv[2:]
passed = failed = 0
def ok(msg):
    global passed; passed += 1; print("ok   " + msg)
def bad(msg):
    global failed; failed += 1; print("FAIL " + msg)
def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: bad(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[:300]}")
    return r.stdout

# ---- 1. runtime files call one way ----
objs = {}
for o in objs_in:
    syms = [l.split() for l in run("nm", o).splitlines()]
    objs[o.split("/")[-1]] = ({s[2] for s in syms if len(s) == 3 and s[1] in "TDRB"},
                              {s[1] for s in syms if len(s) == 2 and s[0] == "U"})
calls = {a: sorted(b for b in objs if b != a and objs[a][1] & objs[b][0]) for a in objs}
def cycle(graph, a, path):
    for b in graph.get(a, ()):
        if b in path: return path[path.index(b):] + [b]
        c = cycle(graph, b, path + [b])
        if c: return c
    return None
def first_cycle(graph):
    return next((c for a in sorted(graph) for c in [cycle(graph, a, [a])] if c), None)
for a in sorted(calls): print(f"     {a:16s} calls {', '.join(calls[a]) or '-'}")
found = first_cycle(calls)
if found: bad("a cycle of calls between runtime files: " + " -> ".join(found))
elif len(objs) < 5: bad(f"only {len(objs)} runtime objects under build/obj/runtime")
else: ok(f"{len(objs)} runtime files call one way (no cycle)")

# ---- the #include graph of the source tree: file -> files it includes (quoted includes, resolved in the
# including file's folder first, then by name among the tree's headers: every header name is unique) ----
SRC = (".c", ".h", ".cu", ".cuh")
def include_graph(root):
    files = []
    for d, subs, names in os.walk(root):
        subs[:] = sorted(s for s in subs if not s.startswith(".") and not (d == root and s == "build"))
        files += [os.path.relpath(os.path.join(d, n), root) for n in sorted(names) if n.endswith(SRC)]
    by_name = {}
    for f in files: by_name.setdefault(os.path.basename(f), []).append(f)
    graph = {}
    for f in files:
        with open(os.path.join(root, f), errors="replace") as fh:
            names = re.findall(r'^\s*#\s*include\s+"([^"]+)"', fh.read(), re.M)
        out = graph[f] = []
        for n in names:
            here = os.path.normpath(os.path.join(os.path.dirname(f), n))
            if here in files: out.append(here)
            elif len(by_name.get(os.path.basename(n), [])) == 1: out.append(by_name[os.path.basename(n)][0])
            # else: a generated header (build/gen) or one of the system's
    return graph
def top(f): return f.split("/")[0]
def folder_graph(graph):
    g = {}
    for f, incs in graph.items():
        for i in incs:
            if top(i) != top(f): g.setdefault(top(f), set()).add(top(i))
    return {a: sorted(b) for a, b in g.items()}
def reach(graph, f):
    seen, todo = set(), [f]
    while todo:
        for i in graph.get(todo.pop(), ()):
            if i not in seen: seen.add(i); todo.append(i)
    return seen
def why(graph, a, b):  # one include that takes folder a into folder b
    return next(f"{f} includes {i}" for f in sorted(graph) for i in graph[f] if top(f) == a and top(i) == b)
tree = include_graph(".")

# ---- 2. products are built from nothing under tests/ ----
ext = sorted(glob.glob("build/python/refit/_refit*.so"))
products = ["build/refit", "build/librefit.a", "build/librefit.so"] + ext
def from_tests(target):
    """why target is built from tests/: inputs under tests/, compile flags naming it, includes reaching it"""
    inputs = run("ninja", "-t", "inputs", target).split()
    found = [f"input {i}" for i in inputs if i.startswith("tests/")]
    for line in run("ninja", "-t", "commands", target).splitlines():
        toks = [t for t in line.split() if re.match(r"(-I|-isystem)?tests(/|$)", t)]
        if toks: found.append(f"command names {toks[0]}: {line[:100]}...")
    for i in inputs:
        found += [f"{i} includes {h}" for h in sorted(reach(tree, i)) if h.startswith("tests/")]
    return found
def global_defs(path):
    flags = ["-D"] if path.endswith(".so") else []
    out = run("nm", "--defined-only", *flags, path) if os.path.exists(path) else ""
    if not out and not flags: out = run("nm", "--defined-only", "-D", path)
    return {s[2] for s in (l.split() for l in out.splitlines()) if len(s) == 3 and s[1] in "TDRBGSVW"}
harness = global_defs("build/obj/libharness.a")
# the checks can fail: they flag a harness user
probe = from_tests("build/test_runtime")
hit = harness & global_defs("build/test_runtime")
if {"rf_loop_run", "rf_gpu_devices", "rf_loop_alloc_count"} <= harness and probe and hit:
    ok(f"the product checks flag a harness user: build/test_runtime is built from {probe[0]} and defines "
       f"{len(hit)} harness symbols (e.g. {sorted(hit)[0]})")
else:
    bad(f"the product checks cannot fail: {len(harness)} harness symbols, build/test_runtime: "
        f"{probe[:1] or 'no tests/ input found'}, {len(hit)} harness symbols")
for p in products:
    if not os.path.exists(p):
        bad(f"{p}: not built"); continue
    why_p = from_tests(p)
    if why_p: bad(f"{p} is built from tests/: " + "; ".join(why_p[:3]))
    else: ok(f"{p}: no input, flag or include from tests/")
    both = sorted(harness & global_defs(p))
    if both: bad(f"{p} defines {len(both)} symbols of the test harness: {', '.join(both[:5])}")
    else: ok(f"{p}: none of the {len(harness)} harness symbols")
if not ext: bad("no Python extension build/python/refit/_refit*.so (ninja python)")

# ---- 3. no cycle of includes between folders ----
with tempfile.TemporaryDirectory() as t:  # the layout before the harness moved: cli/demo.c -> tests/loop.h,
    for f, body in {"cli/demo.c": '#include "loop.h"\n', "cli/gpu.h": "",  # tests/loop.c -> cli/gpu.h
                    "tests/loop.h": '#include "refit.h"\n', "tests/loop.c": '#include "gpu.h"\n#include "loop.h"\n',
                    "runtime/include/refit.h": ""}.items():
        os.makedirs(os.path.dirname(os.path.join(t, f)), exist_ok=True)
        with open(os.path.join(t, f), "w") as fh: fh.write(body)
    old = first_cycle(folder_graph(include_graph(t)))
if old == ["cli", "tests", "cli"]: ok("the include check finds the old cycle cli -> tests -> cli")
else: bad(f"the include check misses the old cycle cli -> tests -> cli (found {old})")
folders = folder_graph(tree)
for a in sorted(folders): print(f"     {a:10s} includes from {', '.join(folders[a])}")
found = first_cycle(folders)
if found: bad("a cycle of includes between folders: " + ", ".join(why(tree, a, b) for a, b in zip(found, found[1:])))
elif len(tree) < 50: bad(f"only {len(tree)} source files found")
else: ok(f"{len(tree)} source files in {len(folders)} folders include one way (no cycle)")

# ---- 4. each runtime file's state is its own ----
def result(good, text):
    (ok if good else bad)(text)
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
sys.exit(1 if failed else 0)
PY
