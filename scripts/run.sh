#!/usr/bin/env bash
# make run: a one-machine pool. `gpupool up` runs a controller and an agent over this host's NVIDIA GPUs, or
# over simulated ones when there are none (GPUPOOL_SIM_GPUS, default 2xH100-SXM-80GB). Then two workloads
# ask `gpupool run` for 30% and 70% of a GPU; the pool places both on GPU 0 (compact-first), each runs a
# program that would take the whole GPU, and `gpupool get workloads` shows them held to their shares.
# When they exit the pool is empty again and `gpupool up` is stopped.
#
#   GPUPOOL_RUN_DIR   where gpupool up keeps its state and log (default /tmp/gpupool-run-$UID)
#   GPUPOOL_RUN_KEEP  1: leave gpupool up running at the end (its socket is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$PWD/$BUILD/bin
DIR=${GPUPOOL_RUN_DIR:-/tmp/gpupool-run-$(id -u)}
SECONDS_EACH=${GPUPOOL_RUN_SECONDS:-10}

if "$BIN/gpupool" smi --real >/dev/null 2>&1; then
    echo "== NVIDIA GPUs found on this host"
    mode=--real
else
    export GPUPOOL_SIM_GPUS=${GPUPOOL_SIM_GPUS:-2xH100-SXM-80GB}
    export GPUPOOL_SIM_STATE=${GPUPOOL_SIM_STATE:-/dev/shm/gpupool-run-$(id -u)}
    echo "== no NVIDIA GPU on this host: simulating $GPUPOOL_SIM_GPUS"
    mode=--sim
fi
export GPUPOOL_SIM_KERNEL_PATH=$PWD/$BUILD/lib/kernels

rm -rf "$DIR"
mkdir -p "$DIR"
export GPUPOOL_SERVER=unix:$DIR/controller.sock
echo "== gpupool up $mode --dir $DIR   (log: $DIR/up.log)"
"$BIN/gpupool" up $mode --dir "$DIR" --listen-tcp none >"$DIR/up.log" 2>&1 &
up=$!
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ "${GPUPOOL_RUN_KEEP:-0}" != 1 ]; then
        kill -TERM "$up" 2>/dev/null || true
        wait "$up" 2>/dev/null || true
    fi
}
trap stop EXIT

for _ in $(seq 100); do
    if n=$("$BIN/gpupool" get gpus -o json 2>/dev/null | grep -c '"uuid"') && [ "$n" -gt 0 ]; then
        break
    fi
    if ! kill -0 "$up" 2>/dev/null; then
        echo "gpupool up exited; its log:" >&2
        cat "$DIR/up.log" >&2
        exit 1
    fi
    sleep 0.2
done
"$BIN/gpupool" get nodes
echo
"$BIN/gpupool" get gpus

echo
echo "== two workloads, each running a program that would keep a whole GPU busy:"
echo "   gpupool run --name demo-30 --percent 30 --vram 4Gi -- demo_load --busy 100"
echo "   gpupool run --name demo-70 --percent 70 --vram 8Gi -- demo_load --busy 100"
"$BIN/gpupool" run --name demo-30 --percent 30 --vram 4Gi -- \
    "$BIN/demo_load" --busy 100 --mem 2048 --seconds "$SECONDS_EACH" &
pids+=($!)
"$BIN/gpupool" run --name demo-70 --percent 70 --vram 8Gi -- \
    "$BIN/demo_load" --busy 100 --mem 6144 --seconds "$SECONDS_EACH" &
pids+=($!)

for t in 4 7; do
    sleep 3
    echo
    echo "== gpupool get workloads   (about ${t} s in; USED is each one's share of its GPU, live)"
    "$BIN/gpupool" get workloads
done
echo
"$BIN/gpupool" get gpus

rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
pids=()
echo
echo "== both exited (status $rc); the pool is free again"
"$BIN/gpupool" get workloads
"$BIN/gpupool" get gpus
if [ "${GPUPOOL_RUN_KEEP:-0}" = 1 ]; then
    echo
    echo "gpupool up keeps running (pid $up): GPUPOOL_SERVER=$GPUPOOL_SERVER $BIN/gpupool get gpus"
fi
exit $rc
