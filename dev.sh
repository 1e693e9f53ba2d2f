#!/usr/bin/env bash
# Bootstrap for a fresh Debian machine with Rust: installs what the project needs
# (just, Debian packages, Python's PyYAML), then runs a `just` recipe.
#   ./dev.sh demo    the whole flow on a local-directory store
#   ./dev.sh test    lints and every test (what CI runs)
#   ./dev.sh bench   benchmarks, as ratios against baselines measured in the same run
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v b2sum >/dev/null || need_apt+=(coreutils)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v kubectl >/dev/null || need_apt+=(kubectl)        # `kubectl kustomize` of manifests/
if [ "${1:-}" = bench ]; then
  command -v rclone >/dev/null || need_apt+=(rclone)
  command -v hyperfine >/dev/null || need_apt+=(hyperfine)
  command -v wrk >/dev/null || need_apt+=(wrk)               # webhook load generator
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet pyyaml 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pyyaml 2>/dev/null \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null
fi
# Validates manifests/ and patched pods against the official schemas (--strict).
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v just >/dev/null; then
  echo "installing just (about 2 minutes, once)..." >&2
  cargo install --locked just >/dev/null 2>&1 || cargo install just
fi
exec just "$@"
