#!/bin/bash
# Instructions the engine executes for N=200 files of 200 KiB (case 2's shape), counted by
# callgrind: repeatable where wall time is not. Prints the total and the total without
# libcrypto (valgrind hides SHA-NI, so sha256 runs a slow generic path under it and would
# swamp everything else; natively it is ~0.1 ms per file on the writer thread).
#   bash benchmarks/experiments/instructions.sh LABEL [ENV=VALUE...]
# Needs valgrind and nginx (benchmarks/setup.sh). Output: /tmp/callgrind-LABEL.out
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=$(python -c "import sys; print(sys.executable)")  # the real binary, not a pyenv shim
out=/tmp/callgrind-$1.out; shift
PYTHONPATH="$here/../.." env "$@" CG=1 N=200 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$PY" "$here/instructions_one.py" >/dev/null 2>&1
callgrind_annotate $out 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); t=$1} /libcrypto/{gsub(",","",$1); c+=$1} END{printf "total %.1fM  non-crypto %.1fM\n", t/1e6, (t-c)/1e6}'
