#!/usr/bin/env bash
# Runs every test file alone, one pytest process at a time, and lists those that fail: a test must
# not depend on what an earlier file left behind (threads, RNG, registered ops, caches).
# Usage: bash tools/check_isolation.sh [FILE...]   (default: every tests/test_*.py, tests/parity/test_*.py, bench/suites/bench_*.py)
# PYTHON picks the interpreter (default: .venv/bin/python, else python3). Exit status: the number
# of failing files (0 when every file passes alone).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(tests/test_*.py tests/parity/test_*.py bench/suites/bench_*.py)
failed=()
for f in "${files[@]}"; do
    start=$SECONDS
    if "$PY" -m pytest -q -p no:cacheprovider "$f" >/tmp/check_isolation.$$.log 2>&1; then
        echo "ok    $f ($((SECONDS - start)) s)"
    else
        rc=$?
        if [ $rc -eq 5 ]; then echo "empty $f"; continue; fi   # no tests collected
        echo "FAIL  $f (exit $rc, $((SECONDS - start)) s)"; tail -n 15 /tmp/check_isolation.$$.log | sed 's/^/      /'
        failed+=("$f")
    fi
done
rm -f /tmp/check_isolation.$$.log
echo "${#failed[@]} of ${#files[@]} files failed alone${failed[*]:+: ${failed[*]}}"
exit ${#failed[@]}
