#!/usr/bin/env bash
# The demo: the whole system on this machine, no cloud account and no cluster (./dev.sh demo,
# just demo). Builds what it needs, then runs the `demo` binary (tests/src/demo/): a local
# store with bundles and a PostgreSQL 12 bundle, the webhook over HTTPS, a Job's pod admitted
# and run from the images with its timeline, the result, and two failures.
#   scripts/demo.sh [--keep]      --keep: keep the work directory (store, certificates, logs)
# Needs root: runc runs the pod's containers, and a mounted input is served over FUSE.
# DEMO_IMAGES=rebuild rebuilds the images even when they look up to date, DEMO_IMAGES=keep
# uses the built ones as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "demo: run it as root (sudo ./dev.sh demo): runc runs the pod's containers and FUSE serves a mounted input" >&2
  exit 1
fi

step "build 1/2: the workspace, release (cargo build --workspace --release)"
echo "the first build takes several minutes; later ones only rebuild what changed"
cargo build --workspace --release

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
archives=(target/images/datamon-{agent,webhook,agent-postgres}-"$version".oci.tar)
stale=${DEMO_IMAGES:-}
for a in "${archives[@]}"; do
  if [ ! -f "$a" ]; then
    stale=rebuild
  elif [ "$stale" != keep ] && [ -n "$(find agent webhook images Cargo.lock -newer "$a" -type f -print -quit)" ]; then
    stale=rebuild
  fi
done
if [ "$stale" = rebuild ]; then
  step "build 2/2: the images datamon-agent, datamon-agent-postgres, datamon-webhook (scripts/build-images.sh)"
  echo "static musl binaries in images FROM scratch, each checked in runc; the first build takes several minutes"
  bash scripts/build-images.sh
elif [ "$stale" = keep ]; then
  step "build 2/2: the images as built (DEMO_IMAGES=keep)"
else
  step "build 2/2: the images are up to date (target/images/ is newer than agent/, webhook/, images/; DEMO_IMAGES=rebuild to rebuild)"
fi

step "the demo (target/release/demo)"
exec target/release/demo "$@"
