#!/usr/bin/env bash
# Property-based API fuzzing with schemathesis against a running release build, driven by the server's own
# OpenAPI documents (v1.0 and beta): no 5xx, every status, content type and body as documented (errors are
# Graph's envelope). EXAMPLES sets the examples per operation (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${PRESENCED_BIN:-$PWD/target/release/presenced}"
[ -x "$bin" ] || cargo build --release --locked

venv=target/schemathesis-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5

data=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" --data-dir "$data" serve --listen "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
token=$("$bin" --data-dir "$data" token --user adele@contoso.example --scopes "Presence.ReadWrite Presence.Read.All")

for version in v1.0 beta; do
  echo "== schemathesis: $version"
  "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi/$version.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${EXAMPLES:-30}" --seed 1 --no-color
done
kill -0 "$server" # the server survived the run
