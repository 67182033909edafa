#!/bin/sh
# test_examples_py.sh: the Python examples as a user runs them on a machine without a GPU: one
# examples/receiver.py per receiver index of qwen3_tiny_tp2 (numpy tensors laid out as vLLM holds
# them), then examples/trainer.py under torchrun, 2 ranks on the CPU over gloo (FSDP2 over a
# transformers >= 5 model made from tests/fixtures/hf/models/qwen3_tiny/config.json, AdamW steps),
# 2 versions over TCP on loopback. Passes when every receiver reports both versions complete with
# the table's bytes and the trainer both pushes. torch and transformers come from a venv cached by
# tests/venv.sh trainer (PyPI, once); where that cannot be made the test says so and is skipped,
# except under CI=true, where it fails.
set -u
cd "$(dirname "$0")/.." || exit 1
plan=qwen3_tiny_tp2 config=tests/fixtures/hf/models/qwen3_tiny receivers=4 ranks=2 versions=2
if ! vpy=$(sh tests/venv.sh trainer); then
  if [ "${CI:-}" = true ]; then echo "FAIL no venv with torch and transformers (tests/venv.sh trainer)"; echo "0 passed, 1 failed"; exit 1; fi
  echo "skipped: the Python trainer example needs torch and transformers (tests/venv.sh trainer could not install them)"
  echo "0 passed, 0 failed"
  exit 0
fi
venv=$(dirname "$(dirname "$vpy")")
export PYTHONPATH=$PWD/build/python PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
trap 'kill $(cat "$tmp"/pids 2>/dev/null) 2>/dev/null; rm -rf "$tmp"' EXIT
passed=0 failed=0
for r in $(seq 0 $((receivers - 1))); do
  "$vpy" examples/receiver.py $plan "$r" --versions $versions > "$tmp/r$r" 2>&1 &
  echo $! >> "$tmp/pids"
done
addrs=
for r in $(seq 0 $((receivers - 1))); do # started when it says so (a loaded machine may take seconds)
  for i in $(seq 1 600); do grep -q listening "$tmp/r$r" && break; sleep 0.1; done
  addrs="$addrs${addrs:+,}$(sed -n 's/.*listening on \(.*\)/\1/p' "$tmp/r$r")"
done
# --standalone: torchrun's rendezvous on a free port of its own
"$venv/bin/torchrun" --standalone --nproc-per-node $ranks examples/trainer.py $plan $config --receivers "$addrs" \
  --versions $versions > "$tmp/t" 2>&1
rc=$?
for r in $(seq 0 $((receivers - 1))); do wait "$(sed -n "$((r + 1))p" "$tmp/pids")"; done
for r in $(seq 0 $((receivers - 1))); do
  bytes=$("$vpy" -c "import refit; print(refit.Plan('$plan')._p.receiver($r)[2])")
  want=$(for v in $(seq 1 $versions); do echo "version $v complete ($((v * bytes)) bytes so far)"; done)
  got=$(grep "complete" "$tmp/r$r")
  if [ "$got" = "$want" ]; then passed=$((passed + 1)); echo "ok   receiver $r: $versions versions complete, $bytes bytes each"
  else failed=$((failed + 1)); echo "FAIL receiver $r (want: $want)"; cat "$tmp/r$r"; fi
done
n=$(grep -c "pushed (.* skipped receivers \[\])" "$tmp/t")
if [ "$rc" = 0 ] && [ "$n" = $versions ]; then passed=$((passed + 1)); echo "ok   trainer: $versions versions pushed from FSDP2 on the CPU (gloo)"
else failed=$((failed + 1)); echo "FAIL trainer: exit $rc, $n of $versions pushes"; tail -n 30 "$tmp/t"; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
