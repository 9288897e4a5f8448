#!/usr/bin/env bash
# Issue 15's engine prototypes on the write path alone (bench/engines/src/main.rs says what each engine is):
# durable, group-committed presence writes from 64 closed-loop clients, and the engine alone (batches of 64
# one after the other), each engine in a process of its own pinned to CPU 0, runs interleaved, median of
# REPS with the range. Prints writes/s, p50/p99, CPU time and bytes written to storage per write, and each
# engine's ratio to today's (sqlite-rows).
#
#   bash bench/engines.sh               # DURATION=20 seconds per run, REPS=3, USERS=100000
set -euo pipefail
cd "$(dirname "$0")/engines"
duration="${DURATION:-20}"
reps="${REPS:-3}"
users="${USERS:-100000}"
cargo build --release --locked -q
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for rep in $(seq "$reps"); do
  for clients in 64 0; do
    for engine in ${ENGINES:-sqlite-rows sqlite-compact fjall}; do
      dir=$(mktemp -d)
      taskset -c 0 target/release/engine-bench "$engine" "$dir" "$duration" "$users" "$clients" \
        | sed "s/^{/{\"clients\":$clients,/" >>"$results"
      rm -rf "$dir"
    done
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for clients in (64, 0):
    print("64 closed-loop clients, group commit" if clients else "the engine alone: batches of 64, one after the other")
    runs = [r for r in rows if r["clients"] == clients]
    keys = [k for k in runs[0] if k not in ("clients", "engine")]
    base = {}
    for engine in dict.fromkeys(r["engine"] for r in runs):
        mine = [r for r in runs if r["engine"] == engine]
        cells = []
        for k in keys:
            values = [r[k] for r in mine]
            median = statistics.median(values)
            base.setdefault(k, median)
            ratio = median / base[k] if base[k] else 0
            cells.append(f"{k} {median:.0f} ({min(values):.0f}-{max(values):.0f}, {ratio:.2f}x)")
        print(f"  {engine:15} " + "; ".join(cells))
PY
