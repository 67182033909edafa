#!/bin/sh
# test_examples.sh: the C examples (examples/receiver.c, trainer.c) run as a user would: one receiver
# process per index of glm_tiny_demo, then one trainer per rank, 3 versions over TCP on loopback.
# Passes when every receiver reports every version complete and every trainer every push.
set -u
plan=glm_tiny_demo receivers=4 trainers=4 versions=3
tmp=$(mktemp -d)
trap 'kill $(cat "$tmp"/pids 2>/dev/null) 2>/dev/null; rm -rf "$tmp"' EXIT
passed=0 failed=0
for r in $(seq 0 $((receivers - 1))); do
  ./build/example_receiver $plan "$r" 0 $versions > "$tmp/r$r" 2>&1 &
  echo $! >> "$tmp/pids"
done
addrs=
for r in $(seq 0 $((receivers - 1))); do
  for i in $(seq 1 600); do grep -q listening "$tmp/r$r" && break; sleep 0.1; done # 60 s: only a hang
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\)/\1/p' "$tmp/r$r")
  addrs="$addrs $r=127.0.0.1:$port"
done
for t in $(seq 0 $((trainers - 1))); do
  ./build/example_trainer $plan "$t" $versions $addrs > "$tmp/t$t" 2>&1 &
  echo $! >> "$tmp/tpids"
done
for p in $(cat "$tmp/tpids"); do wait "$p"; done
for r in $(seq 0 $((receivers - 1))); do wait "$(sed -n "$((r + 1))p" "$tmp/pids")"; done
for r in $(seq 0 $((receivers - 1))); do
  n=$(grep -c "complete:" "$tmp/r$r")
  if [ "$n" = $versions ]; then passed=$((passed + 1)); echo "ok   receiver $r: $versions versions complete"
  else failed=$((failed + 1)); echo "FAIL receiver $r: $n of $versions complete"; cat "$tmp/r$r"; fi
done
for t in $(seq 0 $((trainers - 1))); do
  n=$(grep -c "complete on every receiver" "$tmp/t$t")
  if [ "$n" = $versions ]; then passed=$((passed + 1)); echo "ok   trainer $t: $versions pushes complete"
  else failed=$((failed + 1)); echo "FAIL trainer $t: $n of $versions pushes"; cat "$tmp/t$t"; fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
