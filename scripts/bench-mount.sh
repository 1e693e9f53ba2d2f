#!/usr/bin/env bash
# `bundle mount` (FUSE) benchmark on a local-directory store, as ratios against the same
# bytes and tree on local disk, measured in the same run:
# - sequential read of one big file: cold (page cache dropped, fresh mount: every byte from
#   the store) against `bundle download` and against a cold read from disk; warm (read
#   again: the first time, and the best of three) against the page cache of the file on
#   disk, both through the mount's own page cache and, with a disk cache, from the whole
#   file kept there (passed through);
# - time to the first byte after the mount command starts, mount ready time;
# - `find` and `ls -lR` over a tree of many entries, against the same tree on disk;
# - 4 KiB random reads per second, cold, against the file on disk;
# - the mount's peak RSS (VmHWM) with the default 64 MiB of leaves in memory.
# Usage: scripts/bench-mount.sh [BIN_DIR]   (default target/release; root and /dev/fuse needed)
# Sizes: BENCH_MOUNT_BIG_MIB (default 1024), BENCH_ENTRIES (default 100000),
# BENCH_RANDOM_READS (default 2000). Scratch space: BENCH_DIR (default /tmp).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
agent="$(bin_dir "${1:-target/release}" datamon-agent)/datamon-agent"
big_mib=${BENCH_MOUNT_BIG_MIB:-1024}
entries=${BENCH_ENTRIES:-100000}
random_reads=${BENCH_RANDOM_READS:-2000}
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  echo "bench-mount: needs root and /dev/fuse; skipped" >&2; exit 0
fi
make_work "${BENCH_DIR:-/tmp}/datamon-bench-mount.XXXXXX"
mnt="$work/mnt"
mount_pid=""
results="$work/results.tsv"
stop_mount() {
  stop_process "$mount_pid"
  mount_pid=""
  if grep -q " $mnt " /proc/self/mountinfo 2>/dev/null; then umount -l "$mnt" || true; fi
}
at_exit stop_mount
export DATAMON_CONTRIBUTOR__NAME=bench DATAMON_CONTRIBUTOR__EMAIL=bench@example.com
export DATAMON_GLOBAL_CONFIG="file://$work/store/config"
: > "$results"

now() { date +%s.%N; }
# best NAME CMD...: the shortest wall time of three runs of CMD (warm reads, whose noise
# on a shared machine is one-sided).
best() { repeat=3 timed "$@"; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# start_mount REPO [ARGS...]: mounts the latest bundle of REPO on $mnt; records REPO.ready.
start_mount() {
  mkdir -p "$mnt"
  local s e repo=$1; shift; s=$(now)
  # Removed first: the shell truncates it only once the background process starts.
  rm -f "$work/mount.out"
  DATAMON_CONTEXT=$repo "$agent" bundle mount --repo "$repo" --mount "$mnt" "$@" > "$work/mount.out" 2> "$work/mount.err" &
  mount_pid=$!
  until grep -q '^mounted' "$work/mount.out" 2>/dev/null; do
    if ! kill -0 "$mount_pid" 2>/dev/null; then echo "the mount failed:" >&2; cat "$work/mount.err" >&2; exit 1; fi
    sleep 0.005
  done
  e=$(now)
  record "mount.$repo.ready" "$(echo "$e - $s" | bc)"
}
peak_rss() { awk '/^VmHWM/ {print $2}' "/proc/$mount_pid/status"; }
# random_reads FILE: 4 KiB reads at random 4 KiB-aligned offsets; prints reads per second.
random_reads() {
  python3 - "$1" "$random_reads" <<'PY'
import os, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rnd = random.Random(7)
offsets = [rnd.randrange(blocks) * 4096 for _ in range(n)]
start = time.perf_counter()
for off in offsets:
    if len(os.pread(fd, 4096, off)) != 4096:
        sys.exit(f"short read at {off}")
print(n / (time.perf_counter() - start))
PY
}

echo "== data: one ${big_mib} MiB file; a tree of ${entries} small files" >&2
mkdir -p "$work/big" "$work/wide"
make_file "$work/big/big.bin" "$big_mib"
make_tree "$work/wide" "$entries" 100 10 0 64 txt
for ds in big wide; do
  export DATAMON_CONTEXT=$ds
  "$agent" context create > /dev/null 2>&1
  "$agent" repo create --repo $ds --description bench > /dev/null
  timed "upload.$ds" "$agent" bundle upload --repo $ds --path "$work/$ds" --message bench
done
unset DATAMON_CONTEXT
cold
DATAMON_CONTEXT=big timed download.big.cold "$agent" bundle download --repo big --destination "$work/out"
rm -rf "$work/out"

echo "== one big file" >&2
cold; timed disk.big.read.cold dd if="$work/big/big.bin" of=/dev/null bs=1M status=none
timed disk.big.read.warm1 dd if="$work/big/big.bin" of=/dev/null bs=1M status=none
best disk.big.read.warm dd if="$work/big/big.bin" of=/dev/null bs=1M status=none
cold; record disk.big.random.per_s "$(random_reads "$work/big/big.bin")"
cold; start_mount big
timed mount.big.first_byte head -c 1 "$mnt/big.bin"
stop_mount
cold; start_mount big
timed mount.big.read.cold dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
timed mount.big.read.warm1 dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
best mount.big.read.warm dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
record mount.big.rss_kib "$(peak_rss)"
stop_mount
# With a disk cache: the file read from start to end is kept whole, then passed through.
cold; start_mount big --cache-dir "$work/cache" --cache-mib $((2 * big_mib))
timed mount.big.read.keep dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
for _ in $(seq 600); do ls "$work"/cache/*.file > /dev/null 2>&1 && break; sleep 0.1; done
ls "$work"/cache/*.file > /dev/null || { echo "no whole file kept in the disk cache" >&2; exit 1; }
timed mount.big.read.whole1 dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
best mount.big.read.whole dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
record mount.big.whole.rss_kib "$(peak_rss)"
stop_mount
cold; start_mount big
record mount.big.random.per_s "$(random_reads "$mnt/big.bin")"
record mount.big.random.rss_kib "$(peak_rss)"
stop_mount

echo "== a tree of ${entries} entries" >&2
cold; timed disk.wide.find.cold find "$work/wide"
timed disk.wide.find.warm find "$work/wide"
cold; timed disk.wide.ls.cold ls -lR "$work/wide"
timed disk.wide.ls.warm ls -lR "$work/wide"
cold; start_mount wide
timed mount.wide.find.cold find "$mnt"
found=$(find "$mnt" | wc -l)
[ "$found" -gt "$entries" ] || { echo "the mount lists $found entries, not $entries" >&2; exit 1; }
timed mount.wide.find.warm find "$mnt"
stop_mount
cold; start_mount wide
timed mount.wide.ls.cold ls -lR "$mnt"
timed mount.wide.ls.warm ls -lR "$mnt"
record mount.wide.rss_kib "$(peak_rss)"
stop_mount

python3 - "$results" "$big_mib" "$entries" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, value, _ = line.split("\t")
    rows.setdefault(name, []).append(float(value))
v = lambda n: rows[n][-1]
big_mib, entries = int(sys.argv[2]), int(sys.argv[3])
print(f"\nbundle mount, local-directory store: one {big_mib} MiB file, {entries} entries")
print(f"{'measure':58} {'mount':>10} {'base':>10} {'ratio':>6}  goal")
def speed(what, ours, base, goal=""):
    a, b = big_mib / v(ours), big_mib / v(base)
    print(f"{what:52} {a:6.0f} MiB/s {b:6.0f} MiB/s {a / b:6.2f}  {goal}")
def time(what, ours, base, goal=""):
    print(f"{what:58} {v(ours):8.3f} s {v(base):8.3f} s {v(base) / v(ours):6.2f}  {goal}")
speed("sequential read, cold, vs bundle download", "mount.big.read.cold", "download.big.cold", ">= 0.6")
speed("sequential read, cold, vs disk (page cache dropped)", "mount.big.read.cold", "disk.big.read.cold")
speed("sequential read, first warm, mount's page cache", "mount.big.read.warm1", "disk.big.read.warm1")
speed("sequential read, warm (best of 3), mount's page cache", "mount.big.read.warm", "disk.big.read.warm")
speed("sequential read, cold, keeping it whole, vs download", "mount.big.read.keep", "download.big.cold")
speed("sequential read, first warm, kept whole on disk", "mount.big.read.whole1", "disk.big.read.warm1", ">= 0.8")
speed("sequential read, warm (best of 3), kept whole on disk", "mount.big.read.whole", "disk.big.read.warm", ">= 0.8")
time("find, first after mount, vs disk (page cache dropped)", "mount.wide.find.cold", "disk.wide.find.cold")
time("find, again, vs disk (warm)", "mount.wide.find.warm", "disk.wide.find.warm")
time("ls -lR, first after mount, vs disk (page cache dropped)", "mount.wide.ls.cold", "disk.wide.ls.cold")
time("ls -lR, again, vs disk (warm)", "mount.wide.ls.warm", "disk.wide.ls.warm")
r, d = v("mount.big.random.per_s"), v("disk.big.random.per_s")
print(f"{'4 KiB random reads per second, cold, vs disk':58} {r:10.0f} {d:10.0f} {r / d:6.2f}")
ready, first = rows["mount.big.ready"][0], v("mount.big.first_byte")
print(f"time to first byte after starting the mount command: {ready + first:.3f} s (ready {ready:.3f} s + first byte {first:.3f} s)")
print(f"mount ready: big file {min(rows['mount.big.ready']):.3f} s, {entries} entries {min(rows['mount.wide.ready']):.3f} s (goal < 1 s)")
rss = max(v("mount.big.rss_kib"), v("mount.big.random.rss_kib"), v("mount.big.whole.rss_kib")) / 1024
print(f"mount peak RSS (64 MiB of leaves): big file {rss:.0f} MiB (goal < 150 MiB), tree {v('mount.wide.rss_kib') / 1024:.0f} MiB")
PY
