#!/usr/bin/env bash
# The whole bundle-store flow on a local-directory store: no cloud account, no cluster.
# Usage: scripts/demo.sh [BIN_DIR]   (default target/release: datamon-agent; with root and
# /dev/fuse, also pod-run for the job pod)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bin="$(bin_dir "${1:-target/release}" datamon-agent)"
agent="$bin/datamon-agent"
here="$(cd "$(dirname "$0")/.." && pwd)"
make_work /tmp/datamon-demo.XXXXXX
export DATAMON_GLOBAL_CONFIG="file://$work/store/config"
export DATAMON_CONTRIBUTOR__NAME="Demo User" DATAMON_CONTRIBUTOR__EMAIL="demo@example.com"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a dataset: 200 small files and one 20 MiB file"
mkdir -p "$work/data/images" "$work/data/tables"
for i in $(seq 1 200); do head -c $((RANDOM % 60000 + 100)) /dev/urandom > "$work/data/images/img$i.bin"; done
make_file "$work/data/tables/big.parquet" 20
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
# shellcheck disable=SC2012 # counts the objects in the blob bucket's directory
before=$(ls "$work/store/dev-blob" | wc -l)
out=$("$agent" bundle upload --repo demo --path "$work/data" --message "second version" --label v2)
echo "$out"
# shellcheck disable=SC2012
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

step "a job pod: its input downloaded and mounted, its output uploaded (docs/protocol.md)"
run "$agent" repo create --repo results --description "job outputs"
mnt=/mnt/datamon-demo
cat > "$work/plan.json" <<PLAN
{"coordination": "$mnt/run",
 "inputs": [{"name": "tables", "repo": "demo", "label": "v2", "path": "$mnt/data/tables", "name_filter": "^tables/"},
            {"name": "images", "repo": "demo", "label": "v1", "path": "$mnt/data/images", "mode": "mount"}],
 "outputs": [{"name": "summary", "repo": "results", "path": "$mnt/data/out", "message": "demo job", "label": "latest"}],
 "sidecars": [{"name": "datamon", "inputs": ["tables", "images"], "outputs": ["summary"], "lifecycle": "native"}],
 "deadlines": {"ready": "60s", "start": "60s", "upload": "60s", "grace": "5s"}}
PLAN
app_script="mkdir -p $mnt/data/out && ls $mnt/data/images/images | wc -l > $mnt/data/out/image-count && wc -l < $mnt/data/tables/tables/index.csv > $mnt/data/out/rows && echo 'the job saw its data'"
if [ -z "${DEMO_PROCESSES:-}" ] && [ "$(id -u)" = 0 ] && [ -e /dev/fuse ] && [ -x "$bin/pod-run" ]; then
  # A Pod as the webhook lays it out, run as local processes by the test pod runner: an
  # init container installs the agent, the agent runs as a native sidecar gating the app
  # with a startupProbe, the app runs under `datamon-agent wrap`.
  plan_json=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$work/plan.json")
  cat > "$work/pod.yaml" <<POD
apiVersion: v1
kind: Pod
metadata: {name: demo-job}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  volumes:
    - {name: run, emptyDir: {}}
    - {name: bin, emptyDir: {}}
    - {name: data, emptyDir: {}}
  initContainers:
    - name: datamon-install
      image: datamon-agent
      args: [install, $mnt/bin]
      volumeMounts: [{name: bin, mountPath: $mnt/bin}]
    - name: datamon
      image: datamon-agent
      restartPolicy: Always
      args: [sidecar, --participant, datamon]
      env: [{name: DATAMON_PLAN, value: $plan_json}]
      startupProbe:
        exec: {command: [$mnt/bin/datamon-agent, probe, --participant, datamon]}
        periodSeconds: 1
        failureThreshold: 60
      volumeMounts:
        - {name: run, mountPath: $mnt/run}
        - {name: bin, mountPath: $mnt/bin}
        - {name: data, mountPath: $mnt/data, mountPropagation: Bidirectional}
  containers:
    - name: app
      image: busybox
      command: [$mnt/bin/datamon-agent, wrap, --, sh, -c, "$app_script"]
      env: [{name: DATAMON_PLAN, value: $plan_json}]
      volumeMounts:
        - {name: run, mountPath: $mnt/run}
        - {name: bin, mountPath: $mnt/bin}
        - {name: data, mountPath: $mnt/data, mountPropagation: HostToContainer}
POD
  echo "\$ pod-run $work/pod.yaml   (the test pod runner: containers as local processes)"
  "$bin/pod-run" "$work/pod.yaml" --workdir "$work/pod" --image "datamon-agent=$agent" --env "DATAMON_GLOBAL_CONFIG=$DATAMON_GLOBAL_CONFIG" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("pod", r["phase"]); [print(" ", c["name"], "exit", c["exit_code"], c["termination_message"]) for c in r["init_containers"]+r["containers"]]'
  echo "app's log:"; cat "$work/pod/logs/app.log"
else
  # Without root (no mount namespaces) the same participants run side by side on this
  # machine, with the mount input downloaded instead.
  mnt="$work/job"
  sed -e "s#/mnt/datamon-demo#$mnt#g" -e 's#, "mode": "mount"##' -e 's#"native"#"classic"#' "$work/plan.json" > "$work/plan-local.json"
  export DATAMON_PLAN_FILE="$work/plan-local.json"
  DATAMON_PLAN__TERMINATION_MESSAGE="$work/sidecar.outcome" "$agent" sidecar > "$work/sidecar.log" 2>&1 &
  app_script=${app_script//\/mnt\/datamon-demo/$mnt}
  run env DATAMON_PLAN__TERMINATION_MESSAGE="$work/app.outcome" "$agent" wrap -- sh -c "$app_script"
  wait
  echo "outcome: $(cat "$work/app.outcome")"
  unset DATAMON_PLAN_FILE
fi
run "$agent" label get --repo results --label latest
run "$agent" bundle download --repo results --label latest --destination "$work/summary"
echo "images: $(cat "$work/summary/image-count"), table rows: $(cat "$work/summary/rows")"

step "bad input gets a clear error"
"$agent" bundle download --repo demo --destination "$work/latest" || true
"$agent" bundle download --repo nosuch --destination "$work/x" || true

printf '\n\033[1mdemo finished\033[0m\n'
