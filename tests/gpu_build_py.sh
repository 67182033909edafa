#!/bin/sh
# tests/gpu_build_py.sh UCX_DIR OUT [PYTHON]: the refit Python module for the device machine's
# Python (3.12 there: PYTHON names an interpreter of that version here, default python3.12),
# built with CUDA (nvcc) against a CUDA-enabled UCX (tests/gpu_ucx.sh) in a scratch copy of this
# tree, with the plans the Python GPU runs use (PLANS, default '*tiny*,vllm_*,sglang_*'). OUT/refit
# is the package (librefit.so beside its extension, rpath $ORIGIN); on the device:
#   export PYTHONPATH=OUT LD_LIBRARY_PATH=UCX_DIR/lib:UCX_DIR/libs
#   python3 tests/gpu_e2e.py --sglang --receivers cuda
# Run from the repository root; needs nvcc, lua5.4 and ninja here (what ./configure needs).
set -eu
ucx=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
if [ $# -ge 3 ]; then py=$3
elif python3.12 -c '' 2> /dev/null; then py=python3.12
else py=$(ls "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2> /dev/null | tail -n 1); fi
[ -n "$py" ] || { echo "gpu_build_py: no python3.12 here: name one as the third argument" >&2; exit 1; }
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
ext=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
[ -f "$inc/Python.h" ] || { echo "gpu_build_py: no Python.h in $inc ($py)" >&2; exit 1; }
command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
  { echo "gpu_build_py: no nvcc here: librefit would be built without CUDA (RF_MEM_CUDA refused)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git ls-files -co --exclude-standard | tar -cf - -T - | (cd "$tmp" && tar -xf -)
(cd "$tmp" && ./configure --with-ucx="$ucx" --plans="${PLANS:-*tiny*,vllm_*,sglang_*}" > configure.log &&
  grep -q '^cuda_part = kernels/cuda.ninja' config.ninja && ninja build/python/refit/librefit.so > /dev/null) ||
  { echo "gpu_build_py: the CUDA build failed (in $tmp)" >&2; exit 1; }
rm -rf "$out/refit"
mkdir -p "$out/refit"
cp "$tmp/build/python/refit/librefit.so" python/refit/*.py "$out/refit/"
strip --strip-debug "$out/refit/librefit.so"
# the extension for that Python (its ABI: EXT_SUFFIX), linked like python/part.ninja's py_ext
cc -std=c11 -O2 -fPIC -shared -isystem "$inc" -Iruntime/include python/refit/_refit.c -o "$out/refit/_refit$ext" \
  -L"$out/refit" -l:librefit.so -Wl,-rpath,'$ORIGIN'
echo "built $out/refit ($(du -sh "$out/refit" | cut -f1), _refit$ext, CUDA, plans ${PLANS:-*tiny*,vllm_*,sglang_*})"
