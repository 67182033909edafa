#!/bin/sh
# tests/megatron_venv.sh: print the python of a virtual environment with megatron-core and
# Megatron-Bridge (tests/requirements-megatron.txt), made once under
# ~/.cache/refit/megatron-<hash of that file and the python version> (REFIT_CACHE overrides
# ~/.cache/refit) and reused while the pins are the same. The file's lines above `# --no-deps` are
# installed with their dependencies; the lines below it without (Megatron-Bridge 0.3.1 requires
# Transformer Engine, mamba-ssm and other CUDA builds that do not install on a CPU host; the
# packages its export needs are pinned above the marker). On failure (no PyPI, no space) it prints
# why on stderr and exits 1.
cd "$(dirname "$0")/.." || exit 1
req=tests/requirements-megatron.txt
py=$(sed -n 's/^python = //p' config.ninja 2>/dev/null)
py=${py:-python3}
key=$({ cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
cache=${REFIT_CACHE:-$HOME/.cache/refit}
venv=$cache/megatron-$key
if [ -f "$venv/ok" ]; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$cache" || exit 1
exec 9> "$cache/megatron.lock"
flock 9 # one install at a time (two test runs may ask at once)
if [ -f "$venv/ok" ]; then echo "$venv/bin/python"; exit 0; fi
rm -rf "$venv"
log=$cache/megatron-$key.log
with=$(mktemp) without=$(mktemp)
trap 'rm -f "$with" "$without"' EXIT
sed '/^# --no-deps/,$d' "$req" > "$with"
sed '1,/^# --no-deps/d' "$req" > "$without"
echo "megatron_venv: installing $(grep -hv '^#' "$with" "$without" | tr '\n' ' ')into $venv (once, a few minutes; log $log)" >&2
# "ok" marks a finished install: an interrupted one is made again
if "$py" -m venv "$venv" > "$log" 2>&1 && "$venv/bin/pip" install -r "$with" >> "$log" 2>&1 &&
   "$venv/bin/pip" install --no-deps -r "$without" >> "$log" 2>&1 &&
   "$venv/bin/python" -c 'import torch, numpy, ml_dtypes, transformers, megatron.core' >> "$log" 2>&1; then
  touch "$venv/ok"
  echo "$venv/bin/python"
  exit 0
fi
echo "megatron_venv: could not install $req (last lines of $log):" >&2
tail -n 5 "$log" >&2
rm -rf "$venv"
exit 1
