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
#   bench-pod.sh      pod start -> app start on the pod runner, images (runc) against host
#                     binaries (BENCH_POD_RUNS, default 5); it needs the agent's image: built
#                     here when missing (scripts/build-images.sh, about 8 minutes on 2 cores)
#                     unless BENCH_POD_BUILD_IMAGES=0, then skipped with a line saying so
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

printf '\n== pods: pod start -> app start, images (runc) against host binaries (BENCH_POD_RUNS, default 5)\n'
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -n1)
agent_image="$here/../target/images/datamon-agent-$version.oci.tar"
if [ ! -f "$agent_image" ] && [ "${BENCH_POD_BUILD_IMAGES:-1}" != 0 ]; then
  echo "$agent_image is missing: building the images (scripts/build-images.sh)"
  bash "$here/build-images.sh" || echo "the image build failed (its output above)"
fi
if [ ! -f "$agent_image" ]; then
  echo "SKIPPED: $agent_image is missing; run \`just images\` (scripts/build-images.sh), then scripts/bench-pod.sh"
elif ! bash "$here/bench-pod.sh"; then
  echo "FAILED: scripts/bench-pod.sh (its message above); the pod rows are missing"
fi
