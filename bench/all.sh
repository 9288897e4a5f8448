#!/usr/bin/env bash
# Every benchmark of issue 5, one after another: the criterion benchmarks of the core and of JSON encoding,
# the HTTP load against the floor (bench/http-load.sh), the engine prototypes on the write path
# (bench/engines.sh) and the scale run (1,000,000 users). Takes about 25 minutes on the 2-core machine; the figures and how to read them are in docs/performance.md.
#
#   bash bench/all.sh          # USERS/BURST apply to the scale run, DURATION/REPS to the HTTP load
set -euo pipefail
cd "$(dirname "$0")/.."
echo "## Criterion: the pure core and JSON encoding"
cargo bench -q -p presence-core -p presence-api -- --warm-up-time 1 --measurement-time 3 2>&1 | grep -E '^[a-z].*time:'
echo
echo "## HTTP load: presenced against the floor"
USERS=100000 bash bench/http-load.sh
echo
echo "## The embedded engines on the write path alone"
bash bench/engines.sh
echo
echo "## Scale run"
cargo build --release --locked -q -p presenced --bin presenced --example scale
USERS="${USERS:-1000000}" ./target/release/examples/scale
