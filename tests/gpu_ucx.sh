#!/bin/sh
# tests/gpu_ucx.sh OUT: fetch the CUDA-enabled UCX (the libucx-cu13 wheel from PyPI: cuda_copy and
# cuda_ipc transports, headers, ucx_perftest) and lay it out as a prefix in OUT (bin, include,
# lib with the shared libraries and transport modules, libs with the wheel's bundled libcudart),
# small enough to carry to a machine without registry access. Needs pip and unzip or python3.
set -eu
out=$1
ver=${UCX_WHEEL_VERSION:-1.22.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "libucx-cu13==$ver"
whl=$(ls "$tmp"/libucx_cu13-*.whl)
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$tmp/x"
mkdir -p "$out/bin" "$out/lib" "$out/libs"
cp -R "$tmp/x/libucx/include" "$tmp/x/libucx/etc" "$out/"
cp "$tmp/x/libucx/bin/ucx_perftest" "$tmp/x/libucx/bin/ucx_info" "$out/bin/"
chmod +x "$out/bin/"* # a zip archive keeps no file modes
# the shared libraries and transport modules by soname only (the wheel stores .so, .so.0 and
# .so.0.0.0 as three copies; configure links the .so.0 by path), no archives or cmake files
(cd "$tmp/x/libucx/lib" && find . -name '*.so.0' | tar -cf - -T -) | (cd "$out/lib" && tar -xf -)
cp "$tmp/x/libucx_cu13.libs/"* "$out/libs/"
echo "UCX $ver with CUDA transports in $out ($(du -sh "$out" | cut -f1)); use: ./configure --with-ucx=$out"
