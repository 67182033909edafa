#!/bin/sh
# test_nic_cli.sh: `refit nics` on the sysfs fixtures: full output for one GPU, the choices and skip
# reasons per fixture, exit statuses and error messages; and the committed fixtures are exactly what
# tests/fixtures/mksysfs.sh writes. Run from the repository root after `ninja build/refit`.
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
F=tests/fixtures/sysfs

# run NAME WANT_RC ARGS...: stdout in $tmp/NAME.out, stderr in $tmp/NAME.err
run() {
  name=$1 want=$2
  shift 2
  ./build/refit nics "$@" > "$tmp/$name.out" 2> "$tmp/$name.err"
  rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"; else bad "$name: exit $rc, want $want"; cat "$tmp/$name.err"; fi
}
# has NAME FILE LINE: FILE (out or err) of run NAME holds LINE exactly
has() {
  if grep -qxF -- "$3" "$tmp/$1.$2"; then ok "$1: '$3'"; else bad "$1: no line '$3' in $2:"; cat "$tmp/$1.$2"; fi
}

# 1. fixtures are current
sh tests/fixtures/mksysfs.sh "$tmp/fix" > /dev/null
if diff -r --no-dereference "$tmp/fix" "$F" > "$tmp/fix.diff"; then ok "fixtures match tests/fixtures/mksysfs.sh"
else bad "fixtures differ from tests/fixtures/mksysfs.sh output:"; head -20 "$tmp/fix.diff"; fi

# 2. one GPU in full
run dgx8_one 0 --sysfs $F/dgx8 --gpu 0000:18:00.0
cat > "$tmp/want" <<'END'
sysfs tests/fixtures/sysfs/dgx8, mode auto, minimum rate 0 Gb/s
GPU 0000:18:00.0
  chosen   mlx5_0:1   switch      400 Gb/s  ACTIVE  InfiniBand  0000:19:00.0  numa 0
  chosen   mlx5_1:1   switch      400 Gb/s  ACTIVE  InfiniBand  0000:1a:00.0  numa 0
  skipped  mlx5_2:1   numa        400 Gb/s  ACTIVE  InfiniBand  0000:3b:00.0  numa 0  farther (numa) than the chosen (switch)
  skipped  mlx5_3:1   numa        400 Gb/s  ACTIVE  InfiniBand  0000:3f:00.0  numa 0  farther (numa) than the chosen (switch)
  skipped  mlx5_4:1   other       400 Gb/s  ACTIVE  InfiniBand  0000:9b:00.0  numa 1  farther (other) than the chosen (switch)
  skipped  mlx5_5:1   other        10 Gb/s  DOWN    InfiniBand  0000:9f:00.0  numa 1  state DOWN, not ACTIVE
  skipped  mlx5_6:1   other       400 Gb/s  ACTIVE  InfiniBand  0000:bb:00.0  numa 1  farther (other) than the chosen (switch)
  skipped  mlx5_7:1   other       400 Gb/s  ACTIVE  InfiniBand  0000:bf:00.0  numa 1  farther (other) than the chosen (switch)
  NET_DEVICES=mlx5_0:1,mlx5_1:1 MAX_RMA_RAILS=2 MAX_RNDV_RAILS=2
END
if cmp -s "$tmp/want" "$tmp/dgx8_one.out"; then ok "dgx8 GPU 18:00.0: full output"
else bad "dgx8 GPU 18:00.0: output differs:"; diff "$tmp/want" "$tmp/dgx8_one.out"; fi

# 3. every GPU of each fixture
run dgx8 0 --sysfs $F/dgx8
[ "$(grep -c '^GPU ' "$tmp/dgx8.out")" = 8 ] && ok "dgx8: 8 GPUs" || bad "dgx8: want 8 GPUs"
[ "$(grep '^  NET_DEVICES=' "$tmp/dgx8.out" | tr '\n' ' ')" = "  NET_DEVICES=mlx5_0:1,mlx5_1:1 MAX_RMA_RAILS=2 MAX_RNDV_RAILS=2 \
  NET_DEVICES=mlx5_0:1,mlx5_1:1 MAX_RMA_RAILS=2 MAX_RNDV_RAILS=2   NET_DEVICES=mlx5_2:1   NET_DEVICES=mlx5_3:1 \
  NET_DEVICES=mlx5_4:1   NET_DEVICES=mlx5_4:1   NET_DEVICES=mlx5_6:1   NET_DEVICES=mlx5_7:1 " ] &&
  ok "dgx8: NET_DEVICES per GPU" || { bad "dgx8: NET_DEVICES per GPU:"; grep NET_DEV "$tmp/dgx8.out"; }
has dgx8 out "  skipped  mlx5_5:1   switch       10 Gb/s  DOWN    InfiniBand  0000:9f:00.0  numa 1  state DOWN, not ACTIVE"
has dgx8 out "  chosen   mlx5_4:1   hostbridge  400 Gb/s  ACTIVE  InfiniBand  0000:9b:00.0  numa 1"

run dgx8_stripe 0 --sysfs $F/dgx8 --mode stripe --gpu 0000:be:00.0
has dgx8_stripe out "  NET_DEVICES=mlx5_7:1,mlx5_6:1,mlx5_4:1,mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1 MAX_RMA_RAILS=7 MAX_RNDV_RAILS=7"
run dgx8_off 0 --sysfs $F/dgx8 --mode off --gpu 0000:be:00.0
has dgx8_off out "  mode off: UCX chooses its own devices (NET_DEVICES not set)"
run dgx8_list 1 --sysfs $F/dgx8 --mode mlx5_0,mlx5_5 --gpu 0000:18:00.0
has dgx8_list err "refit nics: GPU 0000:18:00.0: mlx5_5: no usable port (state DOWN, not ACTIVE)"

run numa4 0 --sysfs $F/numa4
has numa4 out "GPU 0000:a1:00.0"
has numa4 out "  chosen   mlx5_1:1   numa        200 Gb/s  ACTIVE  Ethernet    0000:61:00.0  numa 0"
has numa4 out "  skipped  mlx5_3:2   numa        400 Gb/s  INIT    InfiniBand  0000:e1:00.0  numa 1  state INIT, not ACTIVE"

run slowside 0 --sysfs $F/slowside --min-gbps 100
has slowside out "  skipped  mlx5_2:1   switch       25 Gb/s  ACTIVE  Ethernet    0000:05:00.0  numa 0  rate 25 Gb/s below the minimum 100 Gb/s"
has slowside out "  skipped  rxe0:1     other        10 Gb/s  ACTIVE  Ethernet    -             numa -1  rate 10 Gb/s below the minimum 100 Gb/s"
[ "$(grep -c '^  NET_DEVICES=mlx5_[01]:1$' "$tmp/slowside.out")" = 2 ] && ok "slowside: one fast NIC per GPU" ||
  bad "slowside: want NET_DEVICES=mlx5_0:1 and mlx5_1:1"
run slowside_none 1 --sysfs $F/slowside --min-gbps 1000 --gpu 0000:08:00.0
has slowside_none err "refit nics: GPU 0000:08:00.0: no usable RDMA port among 4 (first: mlx5_1:1 rate 400 Gb/s below the minimum 1000 Gb/s)"

run nordma 0 --sysfs $F/nordma
[ "$(grep -c "^  no RDMA devices under $F/nordma/class/infiniband: UCX uses what it finds (tcp, shared memory)$" "$tmp/nordma.out")" = 2 ] &&
  ok "nordma: no RDMA devices, for both GPUs" || { bad "nordma: output"; cat "$tmp/nordma.out"; }

# 4. broken trees: exit 1, the file named on stderr
run bad_rate 1 --sysfs $F/bad_rate
has bad_rate err "refit nics: GPU 0000:03:00.0: $F/bad_rate/class/infiniband/mlx5_0/ports/1/rate: malformed rate 'fast Gb/sec' (want 'N Gb/sec (...)')"
run trunc_class 1 --sysfs $F/trunc_class
has trunc_class err "refit nics: $F/trunc_class/bus/pci/devices/0000:03:00.0/class: truncated: '0x03' has no end of line"
run escape_link 1 --sysfs $F/escape_link
has escape_link err "refit nics: GPU 0000:03:00.0: $F/escape_link/class/infiniband/mlx5_0/device: link leads outside the sysfs root"
run no_gpu 1 --sysfs $F/dgx8 --gpu 0000:77:00.0
has no_gpu err "refit nics: GPU 0000:77:00.0: $F/dgx8/bus/pci/devices/0000:77:00.0: no such PCI device (GPU 0000:77:00.0)"
# a root that is not there (or not a folder) is an error, not a machine without GPUs and NICs
run no_root 1 --sysfs /nonexistent/sysfs
has no_root err "refit nics: --sysfs /nonexistent/sysfs: No such file or directory"
[ -s "$tmp/no_root.out" ] && { bad "no_root: output on stdout:"; cat "$tmp/no_root.out"; } || ok "no_root: nothing on stdout"
run file_root 1 --sysfs tests/fixtures/mksysfs.sh
has file_root err "refit nics: --sysfs tests/fixtures/mksysfs.sh: Not a directory"

# 5. arguments
run bad_rate_arg 2 --min-gbps fast
has bad_rate_arg err "refit nics: --min-gbps 'fast' is not a rate in Gb/s"
run bad_arg 2 --bogus 1
has bad_arg err "refit nics: unknown argument '--bogus'"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
