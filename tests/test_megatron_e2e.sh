#!/bin/sh
# test_megatron_e2e.sh: real megatron-core trainer ranks (gloo on the CPU, local layer specs) push
# their own shards, by their own parameter names, into loopback receivers laid out as vLLM holds the
# model; every destination byte of every version (2 dense, then 3 from a delta trainer) equals the
# engine format of the same weights exported to HF names (tests/megatron/e2e.py says how). One line
# per plan: `megatron: <plan> tp <T> pp <P> ep <E>: <N> bytes equal`. megatron-core and
# Megatron-Bridge come from the venv of tests/venv.sh megatron (PyPI, once); where it cannot be made
# the test says so and is skipped, except under CI=true, where it fails.
set -u
cd "$(dirname "$0")/.." || exit 1
# TP2 x PP2 dense (with Megatron-Bridge), TP2 x EP2 MoE, PP2 x EP2 MLA + MoE + MTP: every kind of split
# in a few minutes; REFIT_MEGATRON_PLANS=all: every megatron_* plan librefit.so carries
plans=${REFIT_MEGATRON_PLANS:-megatron_qwen3_tiny_tp2_pp2 megatron_qwen3_moe_tiny_tp2_ep2 megatron_dsv3_tiny_pp2_ep2 megatron_qwen3_tiny_tp2_vocab_pad}
[ "$plans" = all ] && plans=
if ! vpy=$(sh tests/venv.sh megatron); then
  if [ "${CI:-}" = true ]; then echo "FAIL no venv with megatron-core (tests/venv.sh megatron)"; echo "0 passed, 1 failed"; exit 1; fi
  echo "skipped: the Megatron end-to-end test needs megatron-core (tests/venv.sh megatron could not install it)"
  echo "0 passed, 0 failed"
  exit 0
fi
export PYTHONPATH=$PWD/build/python PYTHONDONTWRITEBYTECODE=1
# shellcheck disable=SC2086
exec "$vpy" tests/megatron/e2e.py $plans
