#!/usr/bin/env python3
"""Overhead of the wrapper and the coordination protocol (issue: sidecar runtime).

usage: bench-runtime.py [BIN_DIR] [ROUNDS]   (default target/release, 20 rounds)

A stand-in sidecar (this script: it takes the participant's flock and writes its state
file as the protocol says) declares itself ready while `datamon-agent wrap` waits for it;
the application is `sh -c 'date +%s%N > FILE'`, which records when it started (and, since
it ends right away, about when it ended). Measured per round, all on CLOCK_REALTIME:

- ready -> app start: from the rename of the sidecar's `ready` state to the app's `date`;
- app exit -> wrapper exit: from the app's `date` to the wrapper's exit seen by this script
  (no outputs to wait for).

The baseline is the same `sh -c date` spawned directly by this script: spawn -> date, and
date -> exit seen. The overhead is the difference. Goal: under 100 ms each.
"""
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def direct(tmp):
    """Baseline: spawn -> date, date -> exit seen, for the bare command."""
    out = os.path.join(tmp, "direct")
    t0 = time.time_ns()
    subprocess.run(["sh", "-c", f"date +%s%N > {out}"], check=True)
    t1 = time.time_ns()
    d = int(open(out).read())
    return d - t0, t1 - d


def wrapped(agent, tmp, i):
    coord = os.path.join(tmp, f"coord{i}")
    os.makedirs(coord)
    out = os.path.join(tmp, f"start{i}")
    plan = {
        "coordination": coord,
        "termination_message": os.path.join(tmp, f"msg{i}"),
        "sidecars": [{"name": "s"}],
        "deadlines": {"ready": "30s", "upload": "30s"},
    }
    env = dict(os.environ, DATAMON_PLAN=json.dumps(plan), DATAMON_LOGLEVEL="warn")
    env.pop("DATAMON_PLAN_FILE", None)
    app = subprocess.Popen([agent, "wrap", "--", "sh", "-c", f"date +%s%N > {out}"], env=env)
    # Let the wrapper reach its wait (its own state file appears).
    deadline = time.time() + 10
    while not os.path.exists(os.path.join(coord, "app.json")):
        if time.time() > deadline:
            app.kill()
            sys.exit("the wrapper never wrote its state")
        time.sleep(0.005)
    time.sleep(0.05)
    lock = open(os.path.join(coord, "s.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = {"protocol": 1, "participant": "s", "phase": "ready", "pid": os.getpid(),
             "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmpfile = os.path.join(coord, ".s.json.tmp")
    with open(tmpfile, "w") as f:
        json.dump(state, f)
    t_ready = time.time_ns()
    os.rename(tmpfile, os.path.join(coord, "s.json"))
    code = app.wait(timeout=30)
    t_exit = time.time_ns()
    if code != 0:
        sys.exit(f"wrap exited {code}")
    # The sidecar is done with its (no) work.
    state["phase"] = "done"
    with open(tmpfile, "w") as f:
        json.dump(state, f)
    os.rename(tmpfile, os.path.join(coord, "s.json"))
    lock.close()
    started = int(open(out).read())
    return started - t_ready, t_exit - started


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else "target/release"
    agent = os.path.join(os.path.abspath(bin_dir), "datamon-agent")
    if not os.access(agent, os.X_OK):
        sys.stderr.write(f"no {agent}: run cargo build --release\n")
        sys.exit(2)
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as tmp:
        base = [direct(tmp) for _ in range(rounds)]
        ours = [wrapped(agent, tmp, i) for i in range(rounds)]
    ms = lambda ns: ns / 1e6
    for k, name in enumerate(["ready -> app start", "app exit -> wrapper exit"]):
        b = [ms(x[k]) for x in base]
        w = [ms(x[k]) for x in ours]
        over = statistics.median(w) - statistics.median(b)
        print(f"{name:26s} wrapped p50 {statistics.median(w):7.2f} ms  max {max(w):7.2f} ms | "
              f"bare command p50 {statistics.median(b):6.2f} ms | overhead p50 {over:6.2f} ms (goal < 100 ms)")


if __name__ == "__main__":
    main()
