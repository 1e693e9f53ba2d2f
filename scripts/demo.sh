#!/usr/bin/env bash
# The whole bundle-store flow on a local-directory store: no cloud account, no cluster.
# Usage: scripts/demo.sh BIN_DIR   (BIN_DIR holds datamon-agent)
set -euo pipefail
bin="$(cd "${1:-target/release}" && pwd)"
agent="$bin/datamon-agent"
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/datamon-demo.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export DATAMON_GLOBAL_CONFIG="file://$work/store/config"
export DATAMON_CONTRIBUTOR__NAME="Demo User" DATAMON_CONTRIBUTOR__EMAIL="demo@example.com"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a dataset: 200 small files and one 20 MiB file"
mkdir -p "$work/data/images" "$work/data/tables"
for i in $(seq 1 200); do head -c $((RANDOM % 60000 + 100)) /dev/urandom > "$work/data/images/img$i.bin"; done
head -c $((20 * 1024 * 1024)) /dev/urandom > "$work/data/tables/big.parquet"
echo "id,name" > "$work/data/tables/index.csv"

step "create a context (five buckets, one directory each) and a repo"
run "$agent" context create
run "$agent" repo create --repo demo --description "demo dataset"
run "$agent" repo list

step "upload it as a bundle with a label"
out=$("$agent" bundle upload --repo demo --path "$work/data" --message "first version" --label v1)
echo "$out"
id1=${out#Uploaded bundle id:}

step "change one file and upload again: only new leaves are written"
echo "3,new row" >> "$work/data/tables/index.csv"
before=$(ls "$work/store/dev-blob" | wc -l)
out=$("$agent" bundle upload --repo demo --path "$work/data" --message "second version" --label v2)
echo "$out"
after=$(ls "$work/store/dev-blob" | wc -l)
echo "blob objects: $before before, $after after (one new leaf and one new root object)"

step "list bundles and labels"
run "$agent" bundle list --repo demo
run "$agent" label list --repo demo

step "download v1 and the latest, and compare"
run "$agent" bundle download --repo demo --label v1 --destination "$work/v1"
run "$agent" bundle download --repo demo --destination "$work/latest"
diff -r "$work/data" "$work/latest"
echo "latest == the current directory"
if diff -q "$work/data/tables/index.csv" "$work/v1/tables/index.csv" >/dev/null; then
  echo "v1 should differ" >&2; exit 1
fi
echo "v1 has the old index.csv"

step "only some files: --name-filter"
run "$agent" bundle download --repo demo --bundle "$id1" --destination "$work/tables" --name-filter '^tables/'
find "$work/tables" -type f | sort

step "check the bundle with an independent implementation of the datamon format"
if python3 -c 'import yaml' 2>/dev/null; then
  id2=$("$agent" label get --repo demo --label v2 --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  run python3 "$here/tests/interop/datamon_ref.py" verify --store "$work/store" --context dev \
      --repo demo --bundle "$id2" --source "$work/data" --label v2
fi

step "bad input gets a clear error"
"$agent" bundle download --repo demo --destination "$work/latest" || true
"$agent" bundle download --repo nosuch --destination "$work/x" || true

printf '\n\033[1mdemo finished\033[0m\n'
