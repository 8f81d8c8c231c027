#!/usr/bin/env bash
# make run: this host's GPUs with work on them. With NVIDIA GPUs present it uses them; otherwise it
# simulates some (GPUPOOL_SIM_GPUS, default 2xH100-SXM-80GB) and runs two demo workloads (busy 30% and 70%)
# so that `gpupool smi` shows them sharing GPU 0. The pool itself (`gpupool up`) arrives with the controller.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$BUILD/bin

if "$BIN/gpupool" smi --real >/dev/null 2>&1; then
    echo "== NVIDIA GPUs found on this host"
    mode=real
else
    export GPUPOOL_SIM_GPUS=${GPUPOOL_SIM_GPUS:-2xH100-SXM-80GB}
    export GPUPOOL_SIM_STATE=${GPUPOOL_SIM_STATE:-/dev/shm/gpupool-run-$(id -u)}
    export LD_LIBRARY_PATH=$PWD/$BUILD/lib/sim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "== no NVIDIA GPU on this host: simulating $GPUPOOL_SIM_GPUS"
    "$BIN/gpupool" sim devices
    mode=sim
fi
export GPUPOOL_SIM_KERNEL_PATH=$PWD/$BUILD/lib/kernels

echo
echo "== two workloads on GPU 0 (30% and 70% busy) for 6 seconds"
"$BIN/demo_load" --gpu 0 --busy 30 --mem 2048 --seconds 6 &
a=$!
"$BIN/demo_load" --gpu 0 --busy 70 --mem 6144 --seconds 6 &
b=$!
trap 'kill $a $b 2>/dev/null || true' EXIT
sleep 3
echo
"$BIN/gpupool" smi $([ "$mode" = sim ] && echo --sim)
wait $a $b
trap - EXIT
echo
echo "== after the workloads exit"
"$BIN/gpupool" smi $([ "$mode" = sim ] && echo --sim)
