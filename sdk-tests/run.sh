#!/usr/bin/env bash
# The official-SDK suites: Microsoft's Python SDK (msgraph-sdk) and JavaScript client
# (@microsoft/microsoft-graph-client), at pinned versions, against the release build of presenced.
set -euo pipefail
cd "$(dirname "$0")/.."
export PRESENCED_BIN="${PRESENCED_BIN:-$PWD/target/release/presenced}"
[ -x "$PRESENCED_BIN" ] || cargo build --release --locked

venv=target/sdk-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r sdk-tests/python/requirements.txt
echo "== Python: msgraph-sdk"
(cd sdk-tests/python && "../../$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning)

echo "== JavaScript: @microsoft/microsoft-graph-client"
(cd sdk-tests/js && npm ci --no-audit --no-fund --loglevel=error && npm test)
