# datamon-sidecar tasks. `./dev.sh RECIPE` installs `just` and the tools first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List recipes.
default:
    @just --list

# Lints and every test (CI runs this through .ci/run).
test:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo build --workspace
    bash scripts/build-images.sh   # the image-based pod tests run these (target/images/)
    cargo test --workspace --no-fail-fast

# Rewrite the webhook's golden files (webhook/tests/golden/) from the current code; review the diff.
golden:
    UPDATE_GOLDEN=1 cargo test -p datamon-webhook --test golden
    git status --short webhook/tests/golden

# The whole system on this machine (root): builds the workspace and the images, then a store, the webhook over HTTPS, a Job's pod from the images with its timeline, and two failures.
demo *ARGS:
    bash scripts/demo.sh {{ARGS}}

# Every benchmark (bench-store, -mount, -webhook, -runtime, -postgres, -pod), as ratios against baselines measured in the same run.
bench:
    cargo build --workspace --release
    bash scripts/bench.sh target/release

# Only the bundle store: upload, download, re-upload on a local directory, S3 and the GCS emulator.
bench-store:
    cargo build --release -p datamon-agent
    cargo build --release -p datamon-e2e --bin s3-server --bin gcs-server
    bash scripts/bench-store.sh target/release

# Only `bundle mount` (FUSE; root and /dev/fuse): reads, listings, ready time, peak RSS.
bench-mount:
    cargo build --release -p datamon-agent
    bash scripts/bench-mount.sh target/release

# Only the webhook: admission latency and throughput over TLS (wrk), peak RSS.
bench-webhook:
    cargo build --release -p datamon-webhook
    bash scripts/bench-webhook.sh target/release

# Only the sidecar runtime's overhead (seconds, not minutes).
bench-runtime:
    cargo build --release -p datamon-agent
    python3 scripts/bench-runtime.py target/release 20

# Only the databases: restore, save and a 14 -> 18 migration of a ~1 GiB database against cp -r, b2sum, pg_ctl and pg_upgrade (root).
bench-postgres:
    cargo build --release -p datamon-agent
    bash scripts/install-postgres.sh
    bash scripts/bench-postgres.sh target/release

# Only pod start -> application start, the pod runner from the images against host binaries (root; builds the images when missing).
bench-pod:
    test -f target/images/datamon-agent-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1).oci.tar || bash scripts/build-images.sh
    bash scripts/bench-pod.sh

# The agent as one static binary (musl), as `datamon-agent install` copies it into any image.
static:
    command -v musl-gcc >/dev/null || (apt-get update -qq && apt-get install -y -qq musl-tools)
    rustup target add x86_64-unknown-linux-musl
    cargo build --release --target x86_64-unknown-linux-musl -p datamon-agent
    file target/x86_64-unknown-linux-musl/release/datamon-agent
    ls -l target/x86_64-unknown-linux-musl/release/datamon-agent

# The container images (FROM scratch, static musl binaries) as OCI archives in target/images/; needs root.
images:
    bash scripts/build-images.sh

# Repeated-code report on the whole tree.
dup:
    duplicates --most 40
