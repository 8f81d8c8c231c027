#!/bin/sh
# run-conf.sh - runs one conformance program (tests/conformance) through GPU-over-IP: a `gpupool worker` on the
# simulated GPU, and the program on gpupool's remote libcuda.so.1 connected to it. Exits with the program's
# status; the worker is stopped afterwards.
#
#   tests/remote/run-conf.sh WORKER_BIN BUILD_LIBDIR unix|tcp|tls PROGRAM [ARGS...]
#
# tls: TCP under TLS, with a certificate for 127.0.0.1 made here by the openssl command.
#
# WORKER_BIN: the gpupool binary; BUILD_LIBDIR: the build's lib folder (holding sim/, remote/ and kernels/).
# Environment: GPUPOOL_SIM_GPUS (default 2xH100-SXM-80GB), KEEP_LOGS=1 to keep the worker's log.
set -u
if [ $# -lt 4 ]; then
    echo "usage: $0 WORKER_BIN BUILD_LIBDIR unix|tcp|tls PROGRAM [ARGS...]" >&2
    exit 2
fi
worker_bin=$1
libdir=$(cd "$2" && pwd)
transport=$3
shift 3
case $transport in
unix | tcp | tls) ;;
*)
    echo "$0: transport \"$transport\": use unix, tcp or tls" >&2
    exit 2
    ;;
esac

dir=$(mktemp -d "${TMPDIR:-/tmp}/gp-run-conf.XXXXXX") || exit 2
token=conf-$$-$(date +%s)
echo "$token" >"$dir/tokens"
worker_pid=
cleanup() {
    if [ -n "$worker_pid" ]; then
        kill "$worker_pid" 2>/dev/null
        wait "$worker_pid" 2>/dev/null
    fi
    if [ "${KEEP_LOGS:-0}" = 1 ]; then
        echo "worker log: $dir/worker.log" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tls_args=
if [ "$transport" = unix ]; then
    listen=unix:$dir/worker.sock
elif [ "$transport" = tcp ]; then
    listen=tcp:127.0.0.1:0
else
    listen=tls:127.0.0.1:0
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/key.pem" \
        -out "$dir/cert.pem" -days 1 -subj /CN=gpupool-worker -addext subjectAltName=IP:127.0.0.1 \
        2>"$dir/openssl.log"; then
        echo "$0: openssl could not make a certificate:" >&2
        cat "$dir/openssl.log" >&2
        exit 2
    fi
    tls_args="--tls-cert $dir/cert.pem --tls-key $dir/key.pem"
    export GPUPOOL_REMOTE_CA="$dir/cert.pem"
fi

GPUPOOL_SIM_GPUS=${GPUPOOL_SIM_GPUS:-2xH100-SXM-80GB} GPUPOOL_SIM_STATE=$dir/sim-state \
    GPUPOOL_SIM_KERNEL_PATH=$libdir/kernels LD_LIBRARY_PATH=$libdir/sim \
    "$worker_bin" worker --listen "$listen" --token-file "$dir/tokens" --cache-dir "$dir/cache" $tls_args \
    2>"$dir/worker.log" &
worker_pid=$!

# Wait (at most 10 s) for the worker to say where it listens.
addr=
i=0
while [ $i -lt 100 ]; do
    addr=$(sed -n 's/^gpupool worker: listening on //p' "$dir/worker.log" 2>/dev/null | head -n 1)
    [ -n "$addr" ] && break
    if ! kill -0 "$worker_pid" 2>/dev/null; then
        echo "$0: the worker exited:" >&2
        cat "$dir/worker.log" >&2
        exit 2
    fi
    sleep 0.1
    i=$((i + 1))
done
if [ -z "$addr" ]; then
    echo "$0: the worker did not start listening within 10 s:" >&2
    cat "$dir/worker.log" >&2
    exit 2
fi

# The program finds gpupool's remote libcuda.so.1 and libnvidia-ml.so.1, both in remote/; nothing of the
# simulator's (its NVML would describe this host's simulated GPUs, not the worker's).
GPUPOOL_REMOTE=$addr GPUPOOL_REMOTE_TOKEN=$token LD_LIBRARY_PATH=$libdir/remote "$@"
status=$?
if [ $status -ne 0 ] && [ -s "$dir/worker.log" ]; then
    echo "--- worker log ---" >&2
    cat "$dir/worker.log" >&2
fi
exit $status
