#!/bin/sh
# test_cli.sh: the refit program's arguments: --help (exit 0, usage on stdout), unknown commands and
# options named on stderr (exit 2), missing values, and `refit demo` running build/refit-demo from its
# own directory (or saying it cannot). Exit statuses and messages are asserted exactly. Run from the
# repository root after `ninja build/refit build/refit-demo`. (`refit nics`: tests/test_nic_cli.sh.)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
refit=./build/refit

# run NAME WANT_RC ARGS...: stdout in $tmp/NAME.out, stderr in $tmp/NAME.err
run() {
  name=$1 want=$2
  shift 2
  "$refit" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err"
  rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"; else bad "$name: exit $rc, want $want"; cat "$tmp/$name.err"; fi
}
# has NAME FILE LINE: FILE (out or err) of run NAME holds LINE exactly
has() {
  if grep -qxF -- "$3" "$tmp/$1.$2"; then ok "$1: '$3'"; else bad "$1: no line '$3' in $2:"; cat "$tmp/$1.$2"; fi
}
# empty NAME FILE: nothing on that stream
empty() { if [ ! -s "$tmp/$1.$2" ]; then ok "$1: $2 empty"; else bad "$1: $2 not empty:"; cat "$tmp/$1.$2"; fi; }

usage="usage: refit <command> [options]   (refit <command> --help: its options)"
# 1. the program
run help 0 --help
has help out "$usage"
for c in demo nics plan import-hf; do
  grep -q "^  $c " "$tmp/help.out" && ok "help: lists $c" || bad "help: no line for $c"
done
empty help err
run help_short 0 -h
has help_short out "$usage"
run none 2
has none err "$usage"
empty none out
run bogus 2 bogus
has bogus err "refit: unknown command 'bogus'"

# 2. refit plan
run plan_help 0 plan --help
has plan_help out "       refit plan --list"
run plan_bogus 2 plan glm_tiny_demo --bogus
has plan_bogus err "refit plan: unknown option '--bogus'"
empty plan_bogus out
run plan_bogus_first 2 plan --bogus glm_tiny_demo
has plan_bogus_first err "refit plan: unknown option '--bogus'"
run plan_no_value 2 plan glm_tiny_demo --nic-gbps
has plan_no_value err "refit plan: --nic-gbps needs a value"
run plan_zero 2 plan glm_tiny_demo --nic-gbps 0
has plan_zero err "refit plan: --nic-gbps needs a positive number, got '0'"
run plan_count 2 plan glm_tiny_demo --nics-per-gpu 1.5
has plan_count err "refit plan: --nics-per-gpu needs a whole number >= 1, got '1.5'"
run plan_density 2 plan glm_tiny_demo --density fp9=0.1
has plan_density err "refit plan: --density needs D or fp8=D,bf16=D,fp32=D with 0 <= D <= 1, got 'fp9=0.1'"
run plan_two 2 plan glm_tiny_demo glm_tiny_rep2
has plan_two err "refit plan: one plan at a time: 'glm_tiny_rep2' after 'glm_tiny_demo'"
run plan_none 2 plan
has plan_none err "refit plan: which plan? (refit plan --list)"
run plan_missing 1 plan no_such_plan
has plan_missing err "refit plan: no plan 'no_such_plan' (refit plan --list)"
run plan_ok 0 plan glm_tiny_demo --nics-per-gpu 2
grep -q "^plan: glm_tiny_demo (" "$tmp/plan_ok.out" && grep -q "^model: 400 Gb/s per NIC, 2 NIC(s) per GPU," "$tmp/plan_ok.out" &&
  ok "plan_ok: names the plan and 2 NICs per GPU" || { bad "plan_ok: output"; cat "$tmp/plan_ok.out"; }

# 3. refit demo runs build/refit-demo (the harness's program) with the same arguments
run demo_help 0 demo --help
has demo_help out "usage: refit demo [--plan NAME] [--versions N] [--tls UCX_TLS]"
run demo_bogus 2 demo --bogus
has demo_bogus err "refit demo: unknown option '--bogus'"
run demo_versions 2 demo --versions 17
has demo_versions err "refit demo: --versions '17' is not a count from 1 to 16"
run demo_plan 2 demo --plan no_such_plan
has demo_plan err "refit demo: no plan 'no_such_plan' (refit plan --list)"
cp "$refit" "$tmp/refit"
refit=$tmp/refit
run demo_alone 1 demo
has demo_alone err "refit demo: cannot run $tmp/refit-demo: No such file or directory (ninja build/refit-demo builds it)"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
