# Shared by the command-line test scripts (sourced): a scratch directory $T removed on exit, pass
# and fail counters, and json FILE EXPR (EXPR over the parsed file `d`, printed by Python).
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
FAILS=0
PASSES=0
ok() { PASSES=$((PASSES + 1)); echo "ok: $1"; }
bad() { FAILS=$((FAILS + 1)); echo "FAIL: $1"; }
json() { "$PY" -c "import json,sys; d=json.load(open('$1')); print($2)"; }
