#!/usr/bin/env bash
# Time from pod start to application start, images against host binaries: the webhook's pod
# (native sidecar, one 1 MiB file downloaded from a local store, the application a busybox
# shell) run by the pod runner twice over, in host mode (the agent binary and the host's sh
# as processes in their own mount namespaces) and in image mode (the agent's OCI image
# target/images/datamon-agent-<version>.oci.tar and a busybox image, each container a
# `runc run` over a fresh overlay). Measured from PodRunner::start to the application's
# first command (a file it touches); the median of BENCH_POD_RUNS (default 5) pods of each
# mode after one warm-up pod each (the first image-mode pod may unpack the archives: the
# runner keeps them unpacked across runs, keyed by digest, in $TMPDIR/datamon-pod-images).
# Prints both medians and the ratio images / host (1.0: no cost for the images). The host
# mode's agent is the debug build next to the tests (target/debug), the image's the release
# musl build: the difference in the agent's own speed is small next to a 1 MiB download.
# Needs root, runc, umoci, skopeo, busybox-static, and the images (just images).
# Usage: scripts/bench-pod.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
archive="target/images/datamon-agent-$version.oci.tar"
if [ "$(id -u)" != 0 ]; then
  echo "bench-pod needs root (runc, mounts): run it as root" >&2
  exit 1
fi
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || {
  echo "runc is missing: apt-get install runc umoci skopeo" >&2
  exit 1
}
if [ ! -f "$archive" ]; then
  echo "$archive is missing: run \`just images\` (scripts/build-images.sh) first" >&2
  exit 1
fi
command -v busybox >/dev/null || [ -x /bin/busybox ] || {
  echo "/bin/busybox is missing: apt-get install busybox-static" >&2
  exit 1
}
cargo build --quiet -p datamon-agent --bin datamon-agent
BENCH_POD_RUNS="${BENCH_POD_RUNS:-5}" cargo test --quiet -p datamon-e2e --test pod_images \
  bench_pod_start_to_app_start -- --ignored --nocapture --test-threads 1 2>&1 |
  grep -E '^(pod start|  )'
