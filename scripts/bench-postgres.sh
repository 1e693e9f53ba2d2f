#!/usr/bin/env bash
# PostgreSQL databases of the data plan against the same work done by hand, in one run:
#   restore to ready   the agent's sidecar (verified download, skeleton, start, a connection
#                      out of recovery; the wrapped app's start is the mark) against
#                      `cp -r` of the saved data directory + `b2sum` of the copy (the check our
#                      bundles carry) + `pg_ctl start -w`
#   save               the application's exit → the sidecar's exit (sessions ended,
#                      CHECKPOINT, fast stop, prune, upload, label) against
#                      `pg_ctl stop -m fast` + the same pruning + `cp -r` + `b2sum`, each
#                      side after the same application (`pgbench -i`, then `sync`)
#   migration 14 → 18  the agent's migration step (from its log: "migrating" → "migrated")
#                      against bare `initdb` + `pg_upgrade --copy` on the same data directory;
#                      and the whole restore with migration against the hand-made chain
# The database: pgbench's tables at scale BENCH_PG_SCALE (default 68: about 1 GiB), made by
# the application of a first pod-like run (a new cluster saved as a bundle). Ratios are
# baseline / agent: 1.0 or more means the agent is at least as fast. Peak RSS is the agent's.
# Restore runs BENCH_REPEAT times (default 3) on each side and keeps each side's best: the
# shared disks and cores of these machines give one-sided noise.
# Goals (issue 12): restore and save ratios >= 1.0, migration within 1.1 of bare pg_upgrade
# (ratio >= 0.91), peak RSS under 200 MiB.
# Usage: scripts/bench-postgres.sh [BIN_DIR]   (default target/release)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"

bin="$(bin_dir "${1:-target/release}" datamon-agent)"
agent="$bin/datamon-agent"
scale="${BENCH_PG_SCALE:-68}"
repeat="${BENCH_REPEAT:-3}"
pg_root="${DATAMON_POSTGRES_ROOT:-/opt/datamon-postgres}"
new="$pg_root/18/bin"
old="$pg_root/14/bin"
for b in "$new" "$old"; do
  [ -x "$b/pg_upgrade" ] || { echo "no $b/pg_upgrade: run scripts/install-postgres.sh" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "run as root: the servers run as the user postgres" >&2; exit 2; }
id postgres >/dev/null || { echo "no user postgres: run scripts/install-postgres.sh" >&2; exit 2; }

make_work "${BENCH_DIR:-/tmp}/bench-pg.XXXXXX"
chmod 755 "$work"
results="$work/results.tsv"
: > "$results"
as_pg() { runuser -u postgres -- "$@"; }

export DATAMON_GLOBAL_CONFIG="file://$work/store/config" DATAMON_CONTEXT=bench
export DATAMON_LOG_FORMAT=json
mkdir -p "$work/store" "$work/pg"
chown postgres: "$work/pg"   # the hand-run servers' logs and sockets
"$agent" context create >/dev/null
"$agent" repo create --repo pg18 --description bench >/dev/null
"$agent" repo create --repo pg14 --description bench >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# pod_run NAME DATABASE_JSON APP_SCRIPT: the sidecar and the wrapped app of a plan with one
# database (named db, on $port), as a pod's containers run them; the app's script sees
# $PGPASSWORD and ends with `sync` (so the save, timed from the app's end, starts with no
# dirty pages of the app's to write back, as every baseline does after `settle`). Writes $work/NAME/{launch,app_start,app_end,done} (epoch seconds) and the
# sidecar's peak RSS to $work/NAME/rss.
pod_run() {
  local name=$1 db=$2 script=$3 d="$work/$1"
  mkdir -p "$d"
  python3 - "$d" "$db" "$port" <<'PY'
import json, sys
d, db, port = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
db.update({"name": "db", "port": port, "dir": f"{d}/pg"})
plan = {"coordination": f"{d}/run", "termination_message": f"{d}/termination-log",
        "databases": [db],
        "deadlines": {"ready": "30m", "start": "5m", "upload": "30m", "grace": "10s"}}
json.dump(plan, open(f"{d}/plan.json", "w"))
PY
  local app="pw=\$(cat $d/run/postgres/db/password 2>/dev/null || true); export PGPASSWORD=\$pw PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=db;
date +%s.%N > $d/app_start; $script; rc=\$?; sync; date +%s.%N > $d/app_end; exit \$rc"
  sync
  date +%s.%N > "$d/launch"
  /usr/bin/time -f %M -o "$d/rss" "$agent" sidecar --participant datamon --plan "$d/plan.json" \
    > "$d/sidecar.out" 2> "$d/sidecar.log" &
  local sidecar=$!
  "$agent" wrap --plan "$d/plan.json" -- sh -c "$app" > "$d/app.out" 2> "$d/app.err" \
    || { echo "step $name: the application failed:" >&2; tail -20 "$d/app.err" "$d/sidecar.log" >&2; exit 1; }
  wait "$sidecar" || { echo "step $name: the sidecar failed:" >&2; tail -20 "$d/sidecar.log" >&2; exit 1; }
  date +%s.%N > "$d/done"
}
since() { awk "BEGIN{printf \"%.6f\", $(cat "$2") - $(cat "$1")}"; }
bundle_of() { # bundle_of NAME: the bundle id the run's sidecar saved
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["outputs"]["db"])' "$work/$1/run/datamon.json"
}
# log_span NAME START_MESSAGE END_MESSAGE: seconds between two log lines of the sidecar.
log_span() {
  python3 - "$work/$1/sidecar.log" "$2" "$3" <<'PY'
import datetime, json, sys
marks = {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    msg = e.get("fields", {}).get("message", "")
    for m in sys.argv[2:4]:
        if msg.startswith(m) and m not in marks:
            marks[m] = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
print(f"{(marks[sys.argv[3]] - marks[sys.argv[2]]).total_seconds():.6f}")
PY
}
tree_b2sum() { (cd "$1" && find . -type f -print0 | xargs -0 b2sum > /dev/null); }

echo "== the database: pgbench at scale $scale, made by a first run's application, saved by the agent" >&2
pod_run make18 '{"major": 18, "output": {"repo": "pg18", "message": "bench"}}' \
  "$new/pgbench -i -q -s $scale"
record agent.save "$(since "$work/make18/app_end" "$work/make18/done")" "$(cat "$work/make18/rss")"
data="$work/make18/pg/data"
[ -f "$data/PG_VERSION" ] || { echo "the saved data directory is not at $data" >&2; exit 1; }
bytes=$(du -sb "$data" | cut -f1)
printf '  data directory: %d MiB\n' $((bytes / 1048576)) >&2

echo "== restore to ready (best of $repeat, each side)" >&2
id18=$(bundle_of make18)
span() { awk "BEGIN{printf \"%.6f\", ${2/,/.} - ${1/,/.}}"; }
less() { awk "BEGIN{exit !($1 < $2)}"; }   # less A B: whether A < B (as numbers)
best_agent=1e9 best_rss=0 best_base=1e9
for round in $(seq 1 "$repeat"); do
  rm -rf "$work/restore18" "$work/copy"
  pod_run restore18 "{\"major\": 18, \"source\": {\"repo\": \"pg18\", \"bundle\": \"$id18\"}}" "true"
  secs=$(since "$work/restore18/launch" "$work/restore18/app_start")
  if less "$secs" "$best_agent"; then best_agent=$secs best_rss=$(cat "$work/restore18/rss"); fi
  settle
  t0=$EPOCHREALTIME
  cp -r "$data" "$work/copy"
  t1=$EPOCHREALTIME
  tree_b2sum "$work/copy"
  t2=$EPOCHREALTIME
  rm -f "$work/copy/pg_version"
  mkdir -p "$work/copy"/{pg_commit_ts,pg_dynshmem,pg_logical/mappings,pg_logical/snapshots,pg_notify,pg_replslot,pg_serial,pg_snapshots,pg_stat_tmp,pg_tblspc,pg_twophase,pg_wal/archive_status,pg_wal/summaries}
  chown -R postgres: "$work/copy"; chmod 700 "$work/copy"
  t3=$EPOCHREALTIME
  as_pg "$new/pg_ctl" -D "$work/copy" -l "$work/pg/copy.log" -o "-p $port -c listen_addresses=127.0.0.1 -k $work/pg" -w start > /dev/null
  t4=$EPOCHREALTIME
  base=$(awk "BEGIN{print $(span "$t0" "$t1") + $(span "$t1" "$t2") + $(span "$t3" "$t4")}")
  printf '  round %d: agent %.2f s, baseline %.2f s\n' "$round" "$secs" "$base" >&2
  if less "$base" "$best_base"; then
    best_base=$base b_cp=$(span "$t0" "$t1") b_sum=$(span "$t1" "$t2") b_start=$(span "$t3" "$t4")
  fi
  [ "$round" = "$repeat" ] || as_pg "$new/pg_ctl" -D "$work/copy" -m immediate -w stop > /dev/null
done
record agent.restore "$best_agent" "$best_rss"
record baseline.restore.cp "$b_cp"
record baseline.restore.b2sum "$b_sum"
record baseline.restore.start "$b_start"

echo "== save (both sides from the same state: the application's pgbench -i, then sync)" >&2
# The agent's save above followed its application's `pgbench -i` (then `sync`); the hand-run
# server (the copy, still up from the last restore round) gets the same work, so each side
# stops a server with the same dirty buffers and the same WAL to checkpoint. Then, timed:
# the fast stop, the recycled WAL segments and the postmaster's files removed as the agent
# prunes them (the copy need not carry them), `cp -r` and `b2sum` of what is left.
as_pg "$new/pgbench" -h "$work/pg" -p "$port" -U postgres -i -q -s "$scale" db > "$work/pg/pgbench.out" 2>&1 \
  || { echo "pgbench on the hand-run server failed:" >&2; tail -20 "$work/pg/pgbench.out" >&2; exit 1; }
sync
t0=$EPOCHREALTIME
as_pg "$new/pg_ctl" -D "$work/copy" -m fast -w stop > /dev/null
redo=$("$new/pg_controldata" -D "$work/copy" | sed -n "s/^Latest checkpoint's REDO WAL file: *//p")
find "$work/copy/pg_wal" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' \
  ! -name "$redo" -delete
rm -f "$work/copy/postmaster.opts" "$work/copy/pg_stat_tmp"/*
t1=$EPOCHREALTIME
cp -r "$work/copy" "$work/copy2"
t2=$EPOCHREALTIME
tree_b2sum "$work/copy2"
t3=$EPOCHREALTIME
[ -n "$redo" ] || { echo "pg_controldata named no REDO WAL file" >&2; exit 1; }
printf '  hand-saved data directory: %d MiB\n' $(($(du -sb "$work/copy2" | cut -f1) / 1048576)) >&2
record baseline.save.stop "$(span "$t0" "$t1")"
record baseline.save.cp "$(span "$t1" "$t2")"
record baseline.save.b2sum "$(span "$t2" "$t3")"
rm -rf "$work/copy" "$work/copy2" "$work/restore18"

echo "== migration 14 → 18" >&2
pod_run make14 '{"major": 14, "output": {"repo": "pg14", "message": "bench"}}' \
  "$old/pgbench -i -q -s $scale"
id14=$(bundle_of make14)
pod_run migrate "{\"major\": 18, \"source\": {\"repo\": \"pg14\", \"bundle\": \"$id14\"}}" "true"
record agent.migrate.restore "$(since "$work/migrate/launch" "$work/migrate/app_start")" "$(cat "$work/migrate/rss")"
record agent.migrate.step "$(log_span migrate "migrating a PostgreSQL cluster" "migrated")"
rm -rf "$work/migrate"
# The bare way on the same (clean, saved) 14 data directory.
old_data="$work/make14/pg/data"
rm -f "$old_data/pg_version"
mkdir -p "$old_data"/{pg_commit_ts,pg_dynshmem,pg_logical/mappings,pg_logical/snapshots,pg_notify,pg_replslot,pg_serial,pg_snapshots,pg_stat_tmp,pg_tblspc,pg_twophase,pg_wal/archive_status}
chown -R postgres: "$old_data"; chmod 700 "$old_data"
mkdir -p "$work/up"; chown postgres: "$work/up"
settle
t0=$EPOCHREALTIME
as_pg "$new/initdb" -D "$work/up/new" -U postgres --auth=trust -E UTF8 --no-locale --no-data-checksums > /dev/null
(cd "$work/up" && as_pg "$new/pg_upgrade" -b "$old" -B "$new" -d "$old_data" -D "$work/up/new" \
  -U postgres --socketdir="$work/up" --copy > "$work/up/pg_upgrade.out") \
  || { echo "pg_upgrade failed:" >&2; tail -30 "$work/up/pg_upgrade.out" >&2; exit 1; }
t1=$EPOCHREALTIME
record baseline.pg_upgrade "$(span "$t0" "$t1")"

python3 - "$results" "$bytes" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    name, secs, rss = line.rstrip("\n").split("\t")
    r[name] = (float(secs), int(rss))
mib = int(sys.argv[2]) / 1048576
s = lambda k: r[k][0]
base_restore = s("baseline.restore.cp") + s("baseline.restore.b2sum") + s("baseline.restore.start")
base_save = s("baseline.save.stop") + s("baseline.save.cp") + s("baseline.save.b2sum")
base_chain = base_restore - s("baseline.restore.start") + s("baseline.pg_upgrade") + s("baseline.restore.start")
rows = [
    ("restore to ready", s("agent.restore"), base_restore, "cp -r + b2sum + pg_ctl start -w", 1.0),
    ("save", s("agent.save"), base_save, "pg_ctl stop -m fast + prune + cp -r + b2sum", 1.0),
    ("migration step 14 → 18", s("agent.migrate.step"), s("baseline.pg_upgrade"), "initdb + pg_upgrade --copy", 1 / 1.1),
    ("restore with migration", s("agent.migrate.restore"), base_chain, "cp -r + b2sum + initdb + pg_upgrade --copy + start", None),
]
print(f"\nPostgreSQL, {mib:.0f} MiB data directory (ratio = baseline / agent; >= 1.0: the agent is as fast)")
print(f"{'measure':<26} {'agent s':>9} {'baseline s':>11} {'ratio':>7}  goal   baseline")
for name, agent, base, what, goal in rows:
    ratio = base / agent if agent > 0 else float("inf")
    g = "" if goal is None else ("met" if ratio >= goal else "MISSED")
    print(f"{name:<26} {agent:9.2f} {base:11.2f} {ratio:7.2f}  {g:<6} {what}")
peak = max(v[1] for k, v in r.items() if k.startswith("agent.")) / 1024
print(f"agent peak RSS: {peak:.1f} MiB (goal < 200 MiB: {'met' if peak < 200 else 'MISSED'})")
PY
