#!/usr/bin/env bash
# Runs the conformance programs against NVIDIA's driver on a GPU machine: the same binaries `make test` runs
# against the simulated GPU, with the loader finding NVIDIA's libcuda.so.1 and libnvidia-ml.so.1 instead.
#   tests/conformance/run-real.sh [BUILD_DIR] [OUTPUT_FILE]
# Builds BUILD_DIR (default build-real) if needed, runs every conf_* program (both header variants), prints
# each result and a summary, and writes the full log to OUTPUT_FILE (default conformance-real.log).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-real}
OUT=${2:-conformance-real.log}
if ! ldconfig -p | grep -q 'libcuda.so.1 '; then
    echo "run-real: NVIDIA's libcuda.so.1 is not installed on this machine" >&2
    exit 2
fi
if [ ! -d "$BUILD/bin/conformance" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null &&
        cmake --build "$BUILD" -j"$(nproc)" >/dev/null || { echo "run-real: build failed" >&2; exit 2; }
fi
unset GPUPOOL_SIM_GPUS GPUPOOL_SIM_STATE
export LD_LIBRARY_PATH=${REAL_LD_LIBRARY_PATH:-}
: >"$OUT"
pass=0
fail=0
for t in "$BUILD"/bin/conformance/conf_*; do
    name=$(basename "$t")
    echo "### $name" >>"$OUT"
    if timeout 300 "$t" >>"$OUT" 2>&1; then
        pass=$((pass + 1))
        echo "pass $name"
    else
        fail=$((fail + 1))
        echo "FAIL $name"
        grep '^FAIL' "$OUT" | sed -n '$p'
    fi
done
echo "conformance against $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1):" \
    "$pass passed, $fail failed (log: $OUT)"
[ "$fail" -eq 0 ]
