#!/usr/bin/env bash
# HTTP load benchmark: presenced (release build, embedded store, real tokens) against the floor server (the same
# tokio/axum stack doing only the unavoidable work: the token verified and cached as presenced does, bodies
# parsed and answers serialised with serde, no store and no presence logic), driven by the same wrk load: 64
# connections, users spread over 100,000 ids, the server pinned to CPU 0 and wrk to CPU 1. Prints req/s,
# p50/p99 and the server's CPU time per request (from /proc/PID/stat around each run) per scenario and
# server (median of REPS runs, with the range), and the ratios presenced/floor.
#
#   bash bench/http-load.sh            # DURATION=10 seconds per run, REPS=3, USERS=100000
#   SCENARIOS="get_many" bash bench/http-load.sh   # a subset of set_presence get_presence get_many
#   BIN=/tmp/presenced-before bash bench/http-load.sh   # another build of presenced, same floor
#   FLOOR=/tmp/floor-before bash bench/http-load.sh      # another build of the floor
#   SOAK_MINUTES=10 bash bench/http-load.sh            # the soak instead: setPresence near 80% of capacity,
#                                                      # reads and change notifications beside it
#   SOAK_PLOT=docs/soak.svg SOAK_MINUTES=10 bash bench/http-load.sh   # and its plot
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-10}"
reps="${REPS:-3}"
export USERS="${USERS:-100000}"
export APP=0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11
export WRK_DIR="$PWD/bench/wrk"
tenant=5f1d3c2a-7b6e-4d8f-9a01-23456789abcd

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }; }
cargo build --release --locked -q -p presenced --bin presenced --example floor --example soak_notify
# BIN=path: another presenced binary (an older build, say), against the same floor; FLOOR=path: another floor.
bin="${BIN:-target/release/presenced}"
floor="${FLOOR:-target/release/examples/floor}"

work=$(mktemp -d)
# The soak watches WATCHED more users (outside wrk's range), whose notifications go to a local HTTPS
# receiver whose CA presenced trusts.
watched=0
if [ -n "${SOAK_MINUTES:-}" ]; then
  watched="${WATCHED:-6500}"
  [ "$watched" -gt 0 ] || { echo "the soak needs WATCHED > 0: its notifications are part of it" >&2; exit 1; }
  # The notifier's subscriptions last 55 minutes.
  [ "$SOAK_MINUTES" -le 50 ] || { echo "SOAK_MINUTES is at most 50" >&2; exit 1; }
fi
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
floor_port=$(free_port)
python3 - "$work/presenced.toml" "$work/data" "$port" "$USERS" "$tenant" "$APP" "$watched" "$work/ca.pem" <<'PY'
import sys
path, data, port, users, tenant, app, watched, ca = sys.argv[1:]
with open(path, "w") as out:
    out.write(f'listen = "127.0.0.1:{port}"\ndata_dir = "{data}"\nissuer = "https://login.presenced.local"\n')
    out.write("throttle_limit = 0\n")
    if int(watched):
        out.write(f'notification_allow_internal = true\nnotification_ca_file = "{ca}"\n')
    # No line per request: the floor writes none either.
    out.write('log_level = "warn"\n')
    out.write(f'[[tenants]]\nid = "{tenant}"\ndisplayName = "Bench"\n')
    out.write(f'[[tenants.apps]]\nid = "{app}"\ndisplayName = "Bench"\n')
    for i in range(int(users) + int(watched)):
        out.write(f'[[tenants.users]]\nid = "00000000-0000-4000-8000-{i:012d}"\n'
                  f'userPrincipalName = "user{i}@bench.example"\ndisplayName = "User {i}"\n')
PY
# The token first: it creates the signing key both servers check tokens against.
export TOKEN=$("$bin" --config "$work/presenced.toml" token)
notifier=""
if [ "$watched" -gt 0 ]; then
  # The notifier: the receiver, the subscriptions and the changes to the watched users; a RESULT line
  # for each line written to its control pipe (descriptor 5), a last one when the pipe closes.
  mkfifo "$work/control"
  PORT=$port FIRST=$USERS WATCHED=$watched RATE="${NOTIFY_RATE:-500}" CA_FILE="$work/ca.pem" \
    taskset -c 1 target/release/examples/soak_notify <"$work/control" >"$work/notify.out" 2>"$work/notify.log" &
  notifier=$!
  # Read-write, so that a write to it never raises SIGPIPE if the notifier has died (checked before each).
  exec 5<>"$work/control"
  for _ in $(seq 600); do [ -s "$work/ca.pem" ] && break; sleep 0.1; done
fi
# Neither server holds the notifier's control pipe open (5>&-): closing it is the notifier's signal to end.
taskset -c 0 "$bin" --config "$work/presenced.toml" serve >"$work/presenced.log" 2>&1 5>&- &
server=$!
taskset -c 0 "$floor" --config "$work/presenced.toml" --listen "127.0.0.1:$floor_port" >"$work/floor.log" 2>&1 5>&- &
floor_pid=$!
trap 'kill $server $floor_pid $notifier 2>/dev/null; rm -rf "$work"' EXIT
for p in "$port" "$floor_port"; do
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done

# CPU time (user + system) a process has used so far, in microseconds.
ticks_per_second=$(getconf CLK_TCK)
cpu_us() { awk -v hz="$ticks_per_second" '{ printf "%d", ($14 + $15) * 1000000 / hz }' "/proc/$1/stat"; }

results="$work/results.jsonl"
if [ -n "${SOAK_MINUTES:-}" ]; then
  # The soak: setPresence's capacity (64 connections, 10 s), then rounds of SOAK_ROUND seconds (30) for
  # SOAK_MINUTES minutes: setPresence held near 80% of the capacity (each of 64 connections pauses between
  # requests) with GET presence (8 connections) beside it, and the notifier's changes to the watched
  # users (NOTIFY_RATE a second, each one notified). After each round: presenced's resident memory and
  # CPU, and the notifier's deliveries and their latency from the write's start. A failed request, a lost
  # notification, or one later than its user's next write (about 13 s on) fails the soak.
  for _ in $(seq 1200); do grep -q '^READY' "$work/notify.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^READY' "$work/notify.out" || { cat "$work/notify.log" >&2; echo "the notifier did not subscribe" >&2; exit 1; }
  round="${SOAK_ROUND:-30}"
  capacity=$(taskset -c 1 wrk -t1 -c64 -d10s -s bench/wrk/set_presence.lua "http://127.0.0.1:$port" | grep '^RESULT ')
  pause=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1][7:]); rate = r["requests"] / r["duration_us"] * 1e6
print(max(1, round(64 / (0.8 * rate) * 1000 - r["p50_us"] / 1000)))' "$capacity")
  echo "setPresence capacity: ${capacity#RESULT }; each connection pauses ${pause} ms"
  echo "${NOTIFY_RATE:-500} changes a second to $watched watched users, in $(( (watched + 649) / 650 )) subscriptions"
  echo >&5 # the notifier starts writing here: the capacity run is measured without its writes
  rounds=$(( SOAK_MINUTES * 60 / round ))
  echo "| s | setPresence req/s | p50 ms | p99 ms | GET req/s | GET p99 ms | notified/s | notification p99 ms | errors | late notifications | resident MiB | CPU % |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for number in $(seq "$rounds"); do
    before=$(cpu_us "$server")
    WRK_DELAY_MS=$pause taskset -c 1 wrk -t1 -c64 -d"${round}s" -s bench/wrk/set_presence.lua "http://127.0.0.1:$port" \
      | grep '^RESULT ' >"$work/set.txt" &
    writes=$!
    taskset -c 1 wrk -t1 -c8 -d"${round}s" -s bench/wrk/get_presence.lua "http://127.0.0.1:$port" | grep '^RESULT ' >"$work/get.txt"
    wait "$writes"
    cpu=$(( $(cpu_us "$server") - before ))
    rss=$(awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$server/status")
    kill -0 "$notifier" 2>/dev/null || { cat "$work/notify.log" >&2; echo "the notifier died" >&2; exit 1; }
    echo >&5
    for _ in $(seq 100); do [ "$(grep -c '^RESULT' "$work/notify.out")" -gt "$number" ] && break; sleep 0.1; done
    [ "$(grep -c '^RESULT' "$work/notify.out")" -gt "$number" ] || { echo "the notifier did not report" >&2; exit 1; }
    notified=$(grep '^RESULT' "$work/notify.out" | tail -n1)
    python3 - "$(( number * round ))" "$round" "$(cat "$work/set.txt")" "$(cat "$work/get.txt")" "$notified" "$rss" "$cpu" \
      "$work/soak.jsonl" <<'PY' || failed=1
import json, sys
at, seconds, put, get, notified, rss, cpu, out = sys.argv[1:]
seconds, put, get, notified = int(seconds), json.loads(put[7:]), json.loads(get[7:]), json.loads(notified[7:])
rate = lambda r: r["requests"] / r["duration_us"] * 1e6
errors = put["errors"] + get["errors"] + notified["failed"]
late = notified["unmatched"]
row = {"at_s": int(at), "set_rate": rate(put), "set_p50_ms": put["p50_us"] / 1000, "set_p99_ms": put["p99_us"] / 1000,
       "get_rate": rate(get), "get_p99_ms": get["p99_us"] / 1000, "notified_rate": notified["delivered"] / notified["seconds"],
       "notify_p99_ms": notified["p99_ms"], "errors": errors, "late": late, "rss_mib": int(rss), "cpu_pct": int(cpu) / seconds / 10_000}
with open(out, "a") as file:
    file.write(json.dumps(row) + "\n")
print(f"| {at} | {row['set_rate']:,.0f} | {row['set_p50_ms']:.2f} | {row['set_p99_ms']:.2f} | {row['get_rate']:,.0f} "
      f"| {row['get_p99_ms']:.2f} | {row['notified_rate']:,.0f} | {row['notify_p99_ms']:.1f} | {errors} | {late} | {rss} "
      f"| {row['cpu_pct']:.0f} |")
sys.exit(1 if errors or late else 0)
PY
  done
  exec 5>&-
  wait "$notifier" || failed=1
  last=$(grep '^RESULT' "$work/notify.out" | tail -n1)
  echo "after the last round: ${last#RESULT }"
  python3 -c 'import json, sys; r = json.loads(sys.argv[1][7:]); sys.exit(1 if r["lost"] or r["failed"] or r["unmatched"] else 0)' "$last" \
    || { echo "notifications were lost" >&2; failed=1; }
  [ -z "${SOAK_PLOT:-}" ] || python3 bench/plot-soak.py "$work/soak.jsonl" "$SOAK_PLOT"
  kill -0 "$server" # presenced survived the soak
  [ -z "${failed:-}" ] || { echo "the soak had failed requests" >&2; exit 1; }
  exit 0
fi
for rep in $(seq "$reps"); do
  for scenario in ${SCENARIOS:-set_presence get_presence get_many}; do
    for target in floor presenced; do
      url="http://127.0.0.1:$port" pid=$server
      [ "$target" = floor ] && url="http://127.0.0.1:$floor_port" pid=$floor_pid
      before=$(cpu_us "$pid")
      line=$(taskset -c 1 wrk -t1 -c64 -d"${duration}s" -s "bench/wrk/$scenario.lua" "$url" | grep '^RESULT ')
      cpu=$(( $(cpu_us "$pid") - before ))
      echo "{\"rep\":$rep,\"scenario\":\"$scenario\",\"target\":\"$target\",\"cpu_us\":$cpu,${line#RESULT \{}" >>"$results"
    done
  done
done
kill -0 "$server" # presenced survived the run
kill -0 "$floor_pid"
python3 bench/summarise.py "$results"
