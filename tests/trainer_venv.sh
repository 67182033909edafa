#!/bin/sh
# tests/trainer_venv.sh: print the python of a virtual environment with the trainer's packages
# (tests/requirements-trainer.txt: torch, transformers >= 5, numpy, ml_dtypes), made once under
# ~/.cache/refit/trainer-<hash of that file> (REFIT_CACHE overrides ~/.cache/refit) and reused while
# the pins are the same. On failure (no PyPI, no space) it prints why on stderr and exits 1.
cd "$(dirname "$0")/.." || exit 1
req=tests/requirements-trainer.txt
py=$(sed -n 's/^python = //p' config.ninja 2>/dev/null)
py=${py:-python3}
key=$({ cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
cache=${REFIT_CACHE:-$HOME/.cache/refit}
venv=$cache/trainer-$key
if [ -f "$venv/ok" ]; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$cache" || exit 1
exec 9> "$cache/trainer.lock"
flock 9 # one install at a time (two test runs may ask at once)
if [ -f "$venv/ok" ]; then echo "$venv/bin/python"; exit 0; fi
rm -rf "$venv"
log=$cache/trainer-$key.log
echo "trainer_venv: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv (once; log $log)" >&2
# "ok" marks a finished install: an interrupted one is made again
if "$py" -m venv "$venv" > "$log" 2>&1 && "$venv/bin/pip" install -r "$req" >> "$log" 2>&1 &&
   "$venv/bin/python" -c 'import torch, transformers, numpy, ml_dtypes' >> "$log" 2>&1; then
  touch "$venv/ok"
  echo "$venv/bin/python"
  exit 0
fi
echo "trainer_venv: could not install $req (last lines of $log):" >&2
tail -n 5 "$log" >&2
rm -rf "$venv"
exit 1
