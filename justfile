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
    cargo test --workspace --no-fail-fast

# The whole flow on a local-directory store: context, repo, upload, label, download, verify.
demo:
    cargo build --workspace --release
    bash scripts/demo.sh target/release

# Benchmarks, printed as ratios against baselines measured in the same run.
bench:
    cargo build --workspace --release
    bash scripts/bench.sh target/release

# The agent as one static binary (musl), as `datamon-agent install` copies it into any image.
static:
    command -v musl-gcc >/dev/null || (apt-get update -qq && apt-get install -y -qq musl-tools)
    rustup target add x86_64-unknown-linux-musl
    cargo build --release --target x86_64-unknown-linux-musl -p datamon-agent
    file target/x86_64-unknown-linux-musl/release/datamon-agent
    ls -l target/x86_64-unknown-linux-musl/release/datamon-agent

# Only the webhook: admission latency and throughput over TLS (wrk), peak RSS.
bench-webhook:
    cargo build --release -p datamon-webhook
    bash scripts/bench-webhook.sh target/release

# Only the sidecar runtime's overhead (seconds, not minutes).
bench-runtime:
    cargo build --release -p datamon-agent
    python3 scripts/bench_runtime.py target/release/datamon-agent 20

# Repeated-code report on the whole tree.
dup:
    duplicates --most 40
