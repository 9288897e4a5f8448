#!/usr/bin/env bash
# Scale-out benchmark: one presenced node on SQLite against two presenced nodes on a real Redis Cluster (6
# redis-server processes, 3 primaries with a replica each, AOF fsynced on every write, every write waiting
# for its replica), under the same wrk load: 64 connections (split 32/32 over the two nodes), users spread
# over USERS ids. Prints, per scenario and deployment, req/s, p50/p99 and the CPU each request cost the
# presenced processes and the Redis processes (from /proc/PID/stat, before and after each run), median of
# REPS runs. On the 2-core machine everything shares two cores, so the absolute rates are indicative only;
# the figures to read are the CPU per request. For setPresence a third row, the floor, has the same cluster
# do only the commands a durable write needs, with no presenced (crates/presence-store-redis/examples/write_floor.rs).
#
#   bash bench/cluster-load.sh      # DURATION=10 seconds per run, REPS=3, USERS=100000
#   SCENARIOS="set_presence" bash bench/cluster-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-10}"
reps="${REPS:-3}"
export USERS="${USERS:-100000}"
export APP=0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11
export WRK_DIR="$PWD/bench/wrk"
tenant=5f1d3c2a-7b6e-4d8f-9a01-23456789abcd

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }; }
cargo build --release --locked -q -p presenced --bin presenced -p presence-store-redis --example write_floor
bin="${PRESENCED_BIN:-target/release/presenced}" # PRESENCED_BIN: another build, to compare

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null; bash scripts/redis-cluster.sh stop "$work/cluster"; rm -rf "$work"' EXIT
mapfile -t urls < <(bash scripts/redis-cluster.sh start "$work/cluster")
redis_pids=$(cat "$work"/cluster/*/redis.pid | tr '\n' ' ')

# The configuration of every node: the bench directory, no throttling, no line per request.
python3 - "$work/base.toml" "$USERS" "$tenant" "$APP" <<'PY'
import sys
path, users, tenant, app = sys.argv[1:]
with open(path, "w") as out:
    out.write('issuer = "https://login.presenced.local"\nthrottle_limit = 0\nlog_level = "warn"\n')
    out.write(f'[[tenants]]\nid = "{tenant}"\ndisplayName = "Bench"\n')
    out.write(f'[[tenants.apps]]\nid = "{app}"\ndisplayName = "Bench"\n')
    for i in range(int(users)):
        out.write(f'[[tenants.users]]\nid = "00000000-0000-4000-8000-{i:012d}"\n'
                  f'userPrincipalName = "user{i}@bench.example"\ndisplayName = "User {i}"\n')
PY
quoted=$(printf '"%s",' "${urls[@]}")
redis_settings=(--set store=redis --set "redis_urls=[${quoted%,}]" --set "signing_key_file=\"$work/signing-key.pem\"")

start() { # NAME ARGS...: starts a node on a free port; prints its port
  local name=$1 port
  shift
  port=$(free_port)
  "$bin" --config "$work/base.toml" --data-dir "$work/$name" "$@" serve --listen "127.0.0.1:$port" \
    >"$work/$name.log" 2>&1 &
  echo "$!" > "$work/$name.pid"
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "$port"
}
sqlite_port=$(start sqlite --set "signing_key_file=\"$work/signing-key.pem\"")
a_port=$(start node-a "${redis_settings[@]}")
b_port=$(start node-b "${redis_settings[@]}")
export TOKEN=$("$bin" --config "$work/base.toml" --set "signing_key_file=\"$work/signing-key.pem\"" token)

# CPU seconds used so far by the processes PIDS.
cpu() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | awk -v hz="$(getconf CLK_TCK)" '{s += $1} END {printf "%.3f", s / hz}'; }

results="$work/results.jsonl"
for rep in $(seq "$reps"); do
  for scenario in ${SCENARIOS:-set_presence get_presence get_many}; do
    for deployment in sqlite redis; do
      if [ "$deployment" = sqlite ]; then
        nodes=$(cat "$work/sqlite.pid")
        watched_redis=""
      else
        nodes="$(cat "$work/node-a.pid") $(cat "$work/node-b.pid")"
        watched_redis=$redis_pids
      fi
      node_cpu=$(cpu $nodes)
      redis_cpu=$(cpu $watched_redis)
      if [ "$deployment" = sqlite ]; then
        wrk -t1 -c64 -d"${duration}s" -s "bench/wrk/$scenario.lua" "http://127.0.0.1:$sqlite_port" | grep '^RESULT ' >"$work/run"
      else
        wrk -t1 -c32 -d"${duration}s" -s "bench/wrk/$scenario.lua" "http://127.0.0.1:$a_port" | grep '^RESULT ' >"$work/run-a" &
        wrk -t1 -c32 -d"${duration}s" -s "bench/wrk/$scenario.lua" "http://127.0.0.1:$b_port" | grep '^RESULT ' >"$work/run-b"
        wait %1 2>/dev/null || true
        cat "$work/run-a" "$work/run-b" >"$work/run"
      fi
      node_cpu=$(python3 -c "print($(cpu $nodes) - $node_cpu)")
      if [ -n "$watched_redis" ]; then redis_cpu=$(python3 -c "print($(cpu $watched_redis) - $redis_cpu)"); else redis_cpu=0; fi
      python3 - "$work/run" "$rep" "$scenario" "$deployment" "$node_cpu" "$redis_cpu" >>"$results" <<'PY'
import json, sys
path, rep, scenario, deployment, node_cpu, redis_cpu = sys.argv[1:]
runs = [json.loads(line.split(" ", 1)[1]) for line in open(path)]
print(json.dumps({
    "rep": int(rep), "scenario": scenario, "deployment": deployment,
    "requests": sum(run["requests"] for run in runs),
    "duration_us": max(run["duration_us"] for run in runs),
    "p50_us": max(run["p50_us"] for run in runs), "p99_us": max(run["p99_us"] for run in runs),
    "errors": sum(run["errors"] for run in runs),
    "node_cpu_s": float(node_cpu), "redis_cpu_s": float(redis_cpu),
}))
PY
    done
    if [ "$scenario" = set_presence ]; then
      # The floor: the same cluster doing only the commands a durable write needs (see write_floor.rs).
      redis_cpu=$(cpu $redis_pids)
      written=$(target/release/examples/write_floor "$duration" "${urls[@]}")
      redis_cpu=$(python3 -c "print($(cpu $redis_pids) - $redis_cpu)")
      echo "{\"rep\": $rep, \"scenario\": \"set_presence\", \"deployment\": \"floor\", \"requests\": $written, \"duration_us\": ${duration}000000, \"p50_us\": 0, \"p99_us\": 0, \"errors\": 0, \"node_cpu_s\": 0, \"redis_cpu_s\": $redis_cpu}" >>"$results"
    fi
  done
done
for pidfile in "$work"/*.pid; do kill -0 "$(cat "$pidfile")"; done # every node survived the run
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
names = {"set_presence": "setPresence", "get_presence": "GET presence", "get_many": "getPresencesByUserId (650 ids)"}
print("| scenario | deployment | req/s | p50 ms | p99 ms | presenced CPU µs/request | Redis CPU µs/request | errors |")
print("|---|---|---|---|---|---|---|---|")
for scenario, name in names.items():
    for deployment, label in (("sqlite", "1 node, SQLite"), ("redis", "2 nodes, Redis Cluster"), ("floor", "Redis floor (no presenced)")):
        mine = [run for run in runs if run["scenario"] == scenario and run["deployment"] == deployment]
        if not mine:
            continue
        median = lambda values: statistics.median(values)
        rps = median([run["requests"] / (run["duration_us"] / 1e6) for run in mine])
        p50 = median([run["p50_us"] / 1000 for run in mine])
        p99 = median([run["p99_us"] / 1000 for run in mine])
        node = median([run["node_cpu_s"] * 1e6 / max(run["requests"], 1) for run in mine])
        redis = median([run["redis_cpu_s"] * 1e6 / max(run["requests"], 1) for run in mine])
        errors = sum(run["errors"] for run in mine)
        redis_text = f"{redis:.1f}" if deployment != "sqlite" else "—"
        if deployment == "floor":
            print(f"| {name} | {label} | {rps:,.0f} | — | — | — | {redis_text} | {errors} |")
        else:
            print(f"| {name} | {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {node:.1f} | {redis_text} | {errors} |")
failed = [run for run in runs if run["errors"] > 0 or run["requests"] == 0]
for run in failed:
    print(f"error: {run['deployment']} {run['scenario']} (run {run['rep']}): {run['errors']} failed of "
          f"{run['requests']} requests", file=sys.stderr)
if failed:
    # A run whose requests failed (non-2xx answers, socket errors, timeouts) measured something else.
    sys.exit("error: runs with failed requests are not figures")
PY
