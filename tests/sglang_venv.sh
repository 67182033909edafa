#!/bin/sh
# tests/sglang_venv.sh: print the python of a virtual environment with a real SGLang for the CPU
# (tests/requirements-sglang.txt: sglang==0.5.23 and its whole dependency closure, pinned), kept
# under ~/.cache/refit/sglang-<version> (REFIT_CACHE overrides ~/.cache/refit; one copy: it is 11 GB).
# Its file `ok` holds the key (hash of the pins and the Python version) it was checked against; a venv
# there without it, or with another key, is reused when its installed packages are exactly the pins
# (then `ok` is written), else made again. On failure (no PyPI, no space) it prints why on stderr and
# exits 1.
cd "$(dirname "$0")/.." || exit 1
req=tests/requirements-sglang.txt
ver=$(sed -n 's/^sglang==//p' "$req")
py=$(sed -n 's/^python = //p' config.ninja 2>/dev/null)
py=${py:-python3}
key=$({ cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
cache=${REFIT_CACHE:-$HOME/.cache/refit}
venv=$cache/sglang-$ver
current() { [ "$(cat "$venv/ok" 2>/dev/null)" = "$key" ]; }
if current; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$cache" || exit 1
exec 9> "$cache/sglang.lock"
flock 9 # one install at a time (two test runs may ask at once)
if current; then echo "$venv/bin/python"; exit 0; fi
log=$cache/sglang-$ver.log
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
if [ -x "$venv/bin/python" ]; then
  if why=$(satisfies 2>&1); then
    echo "$key" > "$venv/ok"
    echo "sglang_venv: $venv holds every pin of $req: reused" >&2
    echo "$venv/bin/python"
    exit 0
  fi
  echo "sglang_venv: $venv differs from $req ($why): made again" >&2
fi
rm -rf "$venv"
echo "sglang_venv: installing sglang==$ver and $(($(grep -c '==' "$req") - 1)) pinned packages into $venv (once: about 6 GB to download, 11 GB installed, 6 minutes; log $log)" >&2
# "ok" marks a finished, checked install: an interrupted one is made again
if "$py" -m venv "$venv" > "$log" 2>&1 && "$venv/bin/pip" install -r "$req" >> "$log" 2>&1 &&
   satisfies >> "$log" 2>&1 &&
   "$venv/bin/python" -c 'import sglang, torch, transformers, safetensors, numpy, ml_dtypes; print("sglang", sglang.__version__)' >> "$log" 2>&1; then
  echo "$key" > "$venv/ok"
  echo "$venv/bin/python"
  exit 0
fi
echo "sglang_venv: could not install $req (last lines of $log):" >&2
tail -n 5 "$log" >&2
rm -rf "$venv"
exit 1
