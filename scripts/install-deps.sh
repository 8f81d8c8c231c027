#!/usr/bin/env bash
# Installs the Debian packages gpupool needs to build, test and run. Idempotent: packages already
# installed are left alone, and apt-get runs only when something is missing.
#   scripts/install-deps.sh           install what is missing (needs root)
#   scripts/install-deps.sh --check   exit 0 when everything is there, 1 otherwise (changes nothing)
set -euo pipefail

# build: compilers, CMake, pkg-config; libraries: libmicrohttpd (HTTP server), jansson (JSON), libcurl
# (HTTP client), libyaml (config files); tests: cmocka, and Prometheus (a real scraper for /metrics).
# Keep this list sorted and explain additions.
PACKAGES=(
    clang
    clang-format
    cmake
    gcc
    libc6-dev
    libclang-rt-dev
    libcmocka-dev
    libcurl4-openssl-dev
    libjansson-dev
    libmicrohttpd-dev
    libssl-dev # GPU-over-IP over TLS (src/remote/tls.c)
    libyaml-dev
    make
    openssl # tests: makes the self-signed certificate of the HTTPS test (test_http)
    pkg-config
    prometheus
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${1:-}" = "--check" ]; then
    [ ${#missing[@]} -eq 0 ] && exit 0
    echo "missing Debian packages: ${missing[*]}" >&2
    exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: these packages are missing: ${missing[*]}" >&2
    echo "install-deps: run as root (or: sudo $0) so apt-get can install them" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "install-deps: apt-get update failed; trying the install with the current lists" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}"
