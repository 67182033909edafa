#!/bin/sh
# mkdumps.sh: how tests/sglang/dumps were made (opt-in; CI uses the committed dumps). Needs
#   SGLANG_PYTHON  a python with sglang==0.5.23 installed (e.g. ~/.cache/refit/sglang-0.5.23/bin/python)
#   PROBE          the project's shared SGLang probe (make_tiny_ckpt.py, dump_sglang.py, fakecuda_sgl.py)
#   CUDA_STUB_DIR  a directory holding libcuda.so (CUDA's stub library; default $CUDA_HOME/lib64/stubs)
# Tiny random checkpoints of tests/vllm/configs (GLM-5's gets "moe_layer_freq": 1, which SGLang
# reads), then one dump per line below: NAME CONFIG TP [ServerArgs field=value ...].
# Run from the repository root: sh tests/sglang/mkdumps.sh [NAME ...]
set -eu
py=${SGLANG_PYTHON:?set SGLANG_PYTHON to a python with sglang 0.5.23}
probe=${PROBE:?set PROBE to the directory of the shared SGLang probe scripts}
stubs=${CUDA_STUB_DIR:-${CUDA_HOME:-/usr/local/cuda}/lib64/stubs}
work=${TMPDIR:-/tmp}/refit-sglang-dumps
mkdir -p "$work/stub" "$work/ckpt"
ln -sf "$stubs/libcuda.so" "$work/stub/libcuda.so.1"
dumps='
qwen3_bf16_tp1_sm90        qwen3         1
qwen3_fp8_tp1_sm90         qwen3-fp8     1
qwen3moe_bf16_tp1_sm90     qwen3moe      1
qwen3moe_fp8_tp1_sm90      qwen3moe-fp8  1
dsv3_bf16_tp1_sm90         dsv3          1
dsv3_fp8_tp1_sm90          dsv3-fp8      1
glm5_bf16_tp1_sm90         glm5          1
glm5_fp8_tp1_sm90          glm5-fp8      1
qwen3_bf16_tp2_sm90        qwen3         2
qwen3moe_bf16_tp2_sm90     qwen3moe      2
qwen3moe_bf16_tp2_ep2_sm90 qwen3moe      2 ep_size=2
dsv3_bf16_tp2_sm90         dsv3          2
dsv3_fp8_tp2_sm90          dsv3-fp8      2
glm5_bf16_tp2_sm90         glm5          2
'
echo "$dumps" | while read -r name cfg tp sets; do
  [ -n "$name" ] || continue
  if [ $# -gt 0 ]; then case " $* " in *" $name "*) ;; *) continue ;; esac; fi
  ckpt=$work/ckpt/$cfg
  if [ ! -f "$ckpt/config.json" ]; then
    conf=$work/conf/$cfg
    mkdir -p "$conf"
    cp tests/vllm/configs/$cfg/config.json "$conf/"
    case $cfg in glm5*) "$py" -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['moe_layer_freq']=1; json.dump(c, open(p,'w'), indent=1)" "$conf/config.json" ;; esac
    "$py" "$probe/make_tiny_ckpt.py" "$conf" "$ckpt" $(case $cfg in *-fp8) echo --fp8 ;; esac)
  fi
  args=
  for s in $sets; do args="$args --set $s"; done
  echo "== $name"
  LD_LIBRARY_PATH=$work/stub PYTHONPATH=$probe "$py" "$probe/dump_sglang.py" "$ckpt" --tp "$tp" $args \
    --out "tests/sglang/dumps/$name.txt"
done
