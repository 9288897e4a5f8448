#!/usr/bin/env bash
# The official-SDK suites: Microsoft's Python SDK (msgraph-sdk) and JavaScript client
# (@microsoft/microsoft-graph-client), at pinned versions, against the release build of presenced: first on
# the embedded store, then against a node of a two-node deployment on a real Redis Cluster (started here by
# scripts/redis-cluster.sh, stopped when this script ends).
set -euo pipefail
cd "$(dirname "$0")/.."
export PRESENCED_BIN="${PRESENCED_BIN:-$PWD/target/release/presenced}"
[ -x "$PRESENCED_BIN" ] || cargo build --release --locked

venv=target/sdk-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r sdk-tests/python/requirements.txt
(cd sdk-tests/js && npm ci --no-audit --no-fund --loglevel=error)

suites() {
  echo "== Python: msgraph-sdk ($1)"
  (cd sdk-tests/python && "../../$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning)
  echo "== JavaScript: @microsoft/microsoft-graph-client ($1)"
  (cd sdk-tests/js && npm test)
}

suites "embedded store"

cluster=$(mktemp -d)
trap 'bash scripts/redis-cluster.sh stop "$cluster"; rm -rf "$cluster"' EXIT
PRESENCED_SDK_REDIS_URLS=$(bash scripts/redis-cluster.sh start "$cluster" | paste -sd, -)
export PRESENCED_SDK_REDIS_URLS
suites "a node of two on a Redis Cluster"
