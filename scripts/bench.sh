#!/usr/bin/env bash
# Every benchmark, one after the other, each printed as ratios against baselines measured in
# the same run (what `just bench` and `./dev.sh bench` run):
#   bench-store.sh    upload, download, re-upload: local directory and S3, against cp -r,
#                     b2sum, dd and rclone
#   bench-mount.sh    `bundle mount` (FUSE) against the same bytes on local disk
#   bench-runtime.py  the sidecar runtime's overhead (wrapper and protocol)
#   bench-webhook.sh  admission latency and throughput over TLS, peak RSS
#   bench-postgres.sh databases: restore, save, 14 -> 18 migration against cp -r, b2sum,
#                     pg_ctl and pg_upgrade (BENCH_PG_SCALE, default 68: about 1 GiB)
# Usage: scripts/bench.sh [BIN_DIR]   (default target/release: the release binaries)
# Sizes: BENCH_BIG_MIB (default 2048), BENCH_FILES (default 20000) for the store;
# BENCH_MOUNT_BIG_MIB (default 1024), BENCH_ENTRIES (default 100000) for the mount; each
# script's header lists the rest.
set -euo pipefail
here="$(dirname "$0")"
bin="${1:-target/release}"

bash "$here/bench-store.sh" "$bin"

printf '\n== bundle mount (FUSE): its own data (BENCH_MOUNT_BIG_MIB, default 1024; BENCH_ENTRIES, default 100000)\n'
bash "$here/bench-mount.sh" "$bin"

printf '\n== sidecar runtime: overhead of the wrapper and the protocol (20 rounds)\n'
python3 "$here/bench-runtime.py" "$bin" 20

printf '\n== webhook: admission latency and throughput over TLS\n'
bash "$here/bench-webhook.sh" "$bin"

printf '\n== databases: restore, save and a 14 -> 18 migration (BENCH_PG_SCALE, default 68: ~1 GiB)\n'
bash "$here/bench-postgres.sh" "$bin"
