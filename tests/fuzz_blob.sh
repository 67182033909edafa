#!/bin/sh
# A bounded libFuzzer run of the metadata blob parser (tests/fuzz_blob.c).
set -u
out=build/fuzz_blob.log
if ./build/fuzz_blob -runs=2000000 -max_total_time=12 -max_len=2048 -seed=$(date +%s) > "$out" 2>&1; then
  tail -n 2 "$out"
  echo "1 passed, 0 failed"
else
  tail -n 40 "$out"
  echo "0 passed, 1 failed"
  exit 1
fi
