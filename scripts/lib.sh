# shellcheck shell=bash
# Shell helpers shared by dev.sh and the scripts in scripts/: `source scripts/lib.sh`.
# Plain bash, nothing to install first (dev.sh sources it on a fresh machine); sourcing it
# only defines functions. The benchmark helpers (timed, record) write into "$work" and
# "$results", which the script sets (make_work sets $work).

# as_root CMD...: CMD as root, through sudo unless this is root already.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# at_exit CODE: evaluate CODE when the script exits, however it exits; the last one
# registered runs first, and a failing one does not stop the others.
lib_at_exit=()
at_exit() {
  lib_at_exit=("$1" "${lib_at_exit[@]}")
  trap lib_run_at_exit EXIT
}
lib_run_at_exit() {
  local code
  for code in "${lib_at_exit[@]}"; do eval "$code" || true; done
}

# make_work TEMPLATE: sets $work to a new directory (mktemp -d TEMPLATE), removed at exit
# unless BENCH_KEEP=1 (then its path is printed, to read the logs of each step).
make_work() {
  work="$(mktemp -d "$1")"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    at_exit 'echo "kept: $work" >&2'
  else
    at_exit 'rm -rf "$work"'
  fi
}

# stop_process PID: SIGTERM to PID if it still runs, then wait for it. No PID, no-op.
stop_process() {
  if [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# bin_dir DIR NAME...: prints DIR as an absolute path, after checking that it holds the
# executable NAME of each binary needed (exit 2 with the fix if not).
bin_dir() {
  local dir name
  dir="$(cd "$1" 2>/dev/null && pwd)" || { echo "no directory $1: run cargo build --release" >&2; exit 2; }
  shift
  for name in "$@"; do
    [ -x "$dir/$name" ] || { echo "no $dir/$name: run cargo build --release" >&2; exit 2; }
  done
  echo "$dir"
}

# make_file FILE MIB: FILE of MIB MiB of random bytes.
make_file() { head -c $(($2 * 1024 * 1024)) /dev/urandom > "$1"; }

# make_tree ROOT N DIRS SUBDIRS MIN_BYTES MAX_BYTES EXT: N files of random bytes (sizes
# drawn from MIN_BYTES..MAX_BYTES with a fixed seed, so every run has the same sizes) spread
# over DIRS directories of SUBDIRS each: ROOT/dI/eJ/fK.EXT.
make_tree() {
  python3 - "$@" <<'PY'
import os, random, sys
root, n, dirs, subdirs, low, high, ext = sys.argv[1], *map(int, sys.argv[2:7]), sys.argv[7]
dw, sw = len(str(dirs - 1)), len(str(subdirs - 1))
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i % dirs:0{dw}}", f"e{(i // dirs) % subdirs:0{sw}}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.{ext}"), "wb") as f:
        f.write(os.urandom(rnd.randint(low, high)))
PY
}

# settle: runs before every timed run, untimed: no dirty pages of the previous step are
# left to write back during it. A script may redefine it (bench-store.sh: BENCH_COLD).
settle() { sync; }

# record NAME SECONDS [PEAK_RSS_KIB]: appends "NAME<TAB>SECONDS<TAB>PEAK_RSS_KIB" to
# $results (RSS 0 when not measured) and prints it.
# shellcheck disable=SC2154 # $results is set by the calling script
record() {
  printf '%s\t%s\t%s\n' "$1" "$2" "${3:-0}" >> "$results"
  if [ -n "${3:-}" ]; then
    printf '  %-28s %10.3f s  %8d KiB peak RSS\n' "$1" "$2" "$3" >&2
  else
    printf '  %-28s %10.3f\n' "$1" "$2" >&2
  fi
}

# timed NAME CMD...: runs CMD $repeat times (default 1) and records NAME with the best wall
# time and the highest peak RSS of CMD (GNU time's %M). Before each run, untimed: $prep is
# evaluated, if set, then `settle`. The wall time is read from bash's microsecond clock
# ($EPOCHREALTIME, no process of its own) right around the command, which runs under GNU
# time for its peak RSS; CMD's output goes to $work/cmd.out and cmd.err, shown if it fails. The best of a few runs is the stable figure: the disks
# and shared cores of these machines give noise that is one-sided.
timed() {
  local name=$1 best="" peak=0 start end secs rss
  shift
  for _ in $(seq "${repeat:-1}"); do
    if [ -n "${prep:-}" ]; then eval "$prep"; fi
    settle
    start=$EPOCHREALTIME
    /usr/bin/time -f %M -o "$work/time.out" "$@" > "$work/cmd.out" 2> "$work/cmd.err" \
      || { echo "benchmark step $name failed:" >&2; cat "$work/cmd.err" >&2; exit 1; }
    end=$EPOCHREALTIME
    secs=$(awk "BEGIN{printf \"%.6f\", ${end/,/.} - ${start/,/.}}")
    rss=$(tail -1 "$work/time.out")
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; fi
    if [ "$rss" -gt "$peak" ]; then peak=$rss; fi
  done
  record "$name" "$best" "$peak"
}
