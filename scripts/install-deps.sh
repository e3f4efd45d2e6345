#!/usr/bin/env bash
# install-deps.sh - install what twinmesh needs to build, test and run on Debian 12.
# Idempotent: installs only the packages that are missing, runs apt-get update once.
set -euo pipefail

BUILD_PKGS="build-essential pkg-config meson ninja-build protobuf-c-compiler
  libprotobuf-c-dev libzmq3-dev libczmq-dev librocksdb-dev libsodium-dev libjansson-dev"
TEST_PKGS="libcmocka-dev python3 python3-zmq python3-nacl iproute2 procps"
BENCH_PKGS="redis-server libhiredis-dev postgresql python3-psycopg2"

want="$BUILD_PKGS"
case "${1:-build}" in
    build) ;;
    test)  want="$want $TEST_PKGS" ;;
    bench) want="$want $TEST_PKGS $BENCH_PKGS" ;;
    *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
