"""Prints the table of bench/http-load.sh from its JSON lines: median of the runs with their range, and the
server's CPU time per request where the runs measured it (`cpu_us`). Exits non-zero when any run had failed
requests (non-2xx answers, socket errors, timeouts): those are not figures."""

import json
import statistics
import sys

NAMES = {
    "set_presence": "setPresence",
    "get_presence": "GET presence",
    "get_many": "getPresencesByUserId (650 ids)",
}


def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def main(path):
    runs = [json.loads(line) for line in open(path)]
    failed = [run for run in runs if run["errors"] > 0 or run["requests"] == 0]
    print("| scenario | server | req/s | p50 ms | p99 ms | CPU µs/request | errors |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for scenario, name in NAMES.items():
        if not any(run["scenario"] == scenario for run in runs):
            continue  # SCENARIOS chose a subset
        medians = {}
        for target in ("floor", "presenced"):
            mine = [run for run in runs if run["scenario"] == scenario and run["target"] == target]
            if not mine:
                print(f"error: {target} {scenario} has no runs", file=sys.stderr)
                sys.exit(1)
            rps = [run["requests"] / (run["duration_us"] / 1e6) for run in mine]
            p50 = [run["p50_us"] / 1000 for run in mine]
            p99 = [run["p99_us"] / 1000 for run in mine]
            cpu = [run["cpu_us"] / run["requests"] for run in mine if "cpu_us" in run and run["requests"]]
            errors = sum(run["errors"] for run in mine)
            medians[target] = (statistics.median(rps), statistics.median(p99), statistics.median(cpu) if cpu else None)
            cpu_text = spread(cpu, lambda v: f"{v:.1f}") if cpu else "—"
            print(
                f"| {name} | {target} | {spread(rps, lambda v: f'{v:,.0f}')} | "
                f"{spread(p50, lambda v: f'{v:.2f}')} | {spread(p99, lambda v: f'{v:.2f}')} | {cpu_text} | {errors} |"
            )
        mine, floor = medians["presenced"], medians["floor"]
        cpu_ratio = mine[2] / floor[2] if mine[2] and floor[2] else None
        ratios.append((name, mine[0] / floor[0], mine[1] / floor[1], cpu_ratio))
    print()
    print("| scenario | presenced/floor req/s | presenced/floor p99 | presenced/floor CPU per request |")
    print("|---|---|---|---|")
    for name, rps, p99, cpu in ratios:
        cpu_text = f"{cpu:.1f}×" if cpu else "—"
        print(f"| {name} | {rps:.0%} | {p99:.1f}× | {cpu_text} |")
    if failed:
        # A run whose requests failed (non-2xx answers, socket errors, timeouts) measured something else.
        for run in failed:
            print(f"error: {run['target']} {run['scenario']} (run {run['rep']}): "
                  f"{run['errors']} failed of {run['requests']} requests", file=sys.stderr)
        print("error: runs with failed requests are not figures", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
