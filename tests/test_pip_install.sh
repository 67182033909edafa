#!/bin/sh
# tests/test_pip_install.sh: the README's Python install as a user runs it after the set-up commands:
# in a scratch virtual environment (made with --system-site-packages, so the numpy and ml_dtypes
# configure installed serve it), `pip install .` in the source tree from which build/pip is removed
# first (a fresh clone has none), then the module imported from outside the tree
# (tests/pip_smoke.py: the installed copy, the plan list, one loopback push). pip reaches PyPI for
# the build backend (setuptools, wheel) through its cache.
cd "$(dirname "$0")/.." || exit 1
py=$(sed -n 's/^python = //p' config.ninja)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf build/pip
if ! "${py:-python3}" -m venv --system-site-packages "$tmp/venv" > "$tmp/venv.log" 2>&1; then
  cat "$tmp/venv.log"; echo "FAIL python3 -m venv"; echo "0 passed, 1 failed"; exit 1
fi
# the README's command, in the activated environment
if (. "$tmp/venv/bin/activate" && pip install .) > "$tmp/pip.log" 2>&1; then
  echo "ok   pip install . (in a fresh venv, no build/pip)"
else
  tail -n 30 "$tmp/pip.log"
  echo "FAIL pip install . (in a fresh venv, no build/pip)"; echo "0 passed, 1 failed"; exit 1
fi
plans=$(sed -n 's/^# written by .*carries the plans: //p' planset.ninja)
cd "$tmp" && PYTHONDONTWRITEBYTECODE=1 "$tmp/venv/bin/python" "$OLDPWD/tests/pip_smoke.py" "$plans" |
  awk '/^[0-9]+ passed, [0-9]+ failed$/ { p = $1 + 1; f = $3; print p " passed, " f " failed"; next } { print }
       END { exit f != 0 }'
