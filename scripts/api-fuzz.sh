#!/usr/bin/env bash
# Property-based API fuzzing with schemathesis, every check on (--checks all), against a running release
# build, driven by the server's own OpenAPI documents (v1.0 and beta): no 5xx; every status, header,
# content type and body as documented (errors are Graph's envelope); every schema-valid request accepted
# and every schema-invalid one refused; 405 with Allow for undocumented methods; auth enforced; created
# subscriptions readable and gone once deleted. EXAMPLES sets the examples per operation (default 30).
# It runs against a server on the embedded store, then against one on a Redis Cluster that it starts
# (scripts/redis-cluster.sh).
#
# The rules a schema cannot state (the sessionId is the caller's application id, duration ranges, time
# zones, the subscription handshake) are applied to valid cases by scripts/api_fuzz_hooks.py; subscriptions
# validate against a local receiver (scripts/api_fuzz_receiver.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${PRESENCED_BIN:-$PWD/target/release/presenced}"
[ -x "$bin" ] || cargo build --release --locked

venv=target/schemathesis-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

data=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; bash scripts/redis-cluster.sh stop "$data/cluster"; rm -rf "$data"' EXIT

receiver_port=$(free_port)
"$venv/bin/python" scripts/api_fuzz_receiver.py "$receiver_port" &
pids+=($!)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$data/key.pem" -out "$data/cert.pem" -subj /CN=fuzz -days 2 \
  2>/dev/null
port=$(free_port)
"$bin" --data-dir "$data/server" --set notification_allow_http=true --set notification_allow_internal=true \
  serve --listen "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
pids+=("$server")
wait_port "$receiver_port"
wait_port "$port"
token=$("$bin" --data-dir "$data/server" token --user adele@contoso.example --scopes "Presence.ReadWrite Presence.Read.All")

export FUZZ_APP_ID=0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11 # the demo application the token is minted for
export FUZZ_RECEIVER="http://127.0.0.1:$receiver_port"
FUZZ_CERTIFICATE=$(openssl x509 -in "$data/cert.pem" -outform DER | base64 -w0)
export FUZZ_CERTIFICATE
export SCHEMATHESIS_HOOKS=api_fuzz_hooks PYTHONPATH="$PWD/scripts"

failed=0
fuzz() { # PORT TOKEN LABEL
  for version in v1.0 beta; do
    echo "== schemathesis: $version ($3)"
    "$venv/bin/schemathesis" run "http://127.0.0.1:$1/openapi/$version.json" \
      --header "Authorization: Bearer $2" --checks all --max-examples "${EXAMPLES:-30}" --seed 1 \
      --no-color --output-sanitize false || failed=1
  done
}
fuzz "$port" "$token" "embedded store"
kill -0 "$server" # the server survived the run

# The same against a server on a Redis Cluster.
mapfile -t urls < <(bash scripts/redis-cluster.sh start "$data/cluster")
quoted=$(printf '"%s",' "${urls[@]}")
redis_port=$(free_port)
redis=(--data-dir "$data/redis-node" --set store=redis --set "redis_urls=[${quoted%,}]")
"$bin" "${redis[@]}" --set notification_allow_http=true --set notification_allow_internal=true \
  serve --listen "127.0.0.1:$redis_port" >"$data/redis-server.log" 2>&1 &
redis_server=$!
pids+=("$redis_server")
wait_port "$redis_port"
redis_token=$("$bin" "${redis[@]}" token --user adele@contoso.example --scopes "Presence.ReadWrite Presence.Read.All")
fuzz "$redis_port" "$redis_token" "Redis Cluster"
kill -0 "$redis_server" # the server survived the run
exit "$failed"
