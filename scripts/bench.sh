#!/usr/bin/env bash
# make bench: runs the benchmarks against the simulated GPU (or, with GPUPOOL_BENCH_REAL=1, NVIDIA's driver)
# and prints their figures; docs/benchmarks.md records them with the machine and the date.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ "${GPUPOOL_BENCH_REAL:-0}" != 1 ]; then
    export LD_LIBRARY_PATH=$PWD/$BUILD/lib/sim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export GPUPOOL_SIM_GPUS=${GPUPOOL_SIM_GPUS:-H100-SXM-80GB}
    export GPUPOOL_SIM_STATE=${GPUPOOL_SIM_STATE:-/dev/shm/gpupool-bench-$(id -u)}
fi
export GPUPOOL_SIM_KERNEL_PATH=$PWD/$BUILD/lib/kernels
echo "== host path of a launch: empty kernels take no modelled time (GPUPOOL_SIM_LAUNCH_NS=0)"
GPUPOOL_SIM_LAUNCH_NS=0 "$BUILD/bin/bench/bench_sim_launch" "${GPUPOOL_BENCH_LAUNCHES:-1000000}"
echo
echo "== the device model's launch cost (1 us per empty kernel, the default)"
"$BUILD/bin/bench/bench_sim_launch" "${GPUPOOL_BENCH_LAUNCHES:-1000000}"
echo
echo "== copies (pinned host memory, one stream)"
"$BUILD/bin/bench/bench_sim_copy" "${GPUPOOL_BENCH_COPY_MIB:-1024}"
echo
export GPUPOOL_BIN=$PWD/$BUILD/bin/gpupool GPUPOOL_VGPU_LIB=$PWD/$BUILD/lib/libgpupool-vgpu.so
echo "== vGPU library overhead, no compute limit (host path: GPUPOOL_SIM_LAUNCH_NS=0)"
GPUPOOL_SIM_LAUNCH_NS=0 "$BUILD/bin/bench/bench_vgpu_overhead" "${GPUPOOL_BENCH_LAUNCHES:-1000000}"
echo
echo "== vGPU compute-limit accuracy (about 2 minutes)"
"$BUILD/bin/bench/bench_vgpu_accuracy" "${GPUPOOL_BENCH_WINDOW_S:-10}" "${GPUPOOL_BENCH_WARMUP_S:-2}"
echo
echo "== the agent's footprint: 8 simulated GPUs x 32 slot sets (about 1 minute)"
"$BUILD/bin/bench/bench_agent" "${GPUPOOL_BENCH_AGENT_WINDOW_S:-20}"
echo
echo "== the controller's allocator: 50,000 workloads on 10,000 GPUs, against a full scan (about 10 seconds)"
"$BUILD/bin/bench/bench_allocator" "${GPUPOOL_BENCH_ALLOC_WORKLOADS:-50000}" "${GPUPOOL_BENCH_ALLOC_NODES:-1000}"
echo
if [ -x "$BUILD/bin/bench/bench_remote" ]; then
    echo "== GPU-over-IP on loopback: raw sockets against gpupool client -> worker (about 1 minute)"
    GPUPOOL_BENCH_WORKER_LIBS=${LD_LIBRARY_PATH:-} LD_LIBRARY_PATH=$PWD/$BUILD/lib/remote \
        "$BUILD/bin/bench/bench_remote" "${GPUPOOL_BENCH_REMOTE_MAX_MIB:-1024}"
fi
