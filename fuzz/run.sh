#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds each (default 20; CI uses the default, a long local run
# passes e.g. 3600). Uses the nightly toolchain when installed, else stable with RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in duration action_body token batch; do
  echo "== fuzz: $target for ${seconds}s"
  if ! cargo "${toolchain[@]}" fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 80 "$log"
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$log" || true
done
