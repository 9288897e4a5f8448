"""The soak's plot: bench/http-load.sh's rows (one JSON object a round) as an SVG of three panels over
time: the p99 latencies, the rates, and presenced's resident memory.

    python3 bench/plot-soak.py soak.jsonl docs/soak.svg
"""
import json
import math
import sys

WIDTH, PANEL, LEFT, RIGHT, TOP, GAP = 760, 170, 70, 170, 30, 50
COLOURS = ["#1f77b4", "#d62728", "#2ca02c"]


def nice_top(value):
    """The smallest of 1, 2, 5 or 10 times a power of ten at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= value)


def label_of(value):
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def panel(rows, series, label, top):
    """One panel: `series` is (key, name) pairs plotted against the rounds' end times."""
    plot_width = WIDTH - LEFT - RIGHT
    end = max(row["at_s"] for row in rows)
    highest = nice_top(max(row[key] for row in rows for key, _ in series) * 1.1)
    x = lambda at: LEFT + plot_width * at / end
    y = lambda value: top + PANEL - PANEL * value / highest
    parts = [f'<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL}" fill="none" stroke="#999"/>',
             f'<text x="{LEFT - 55}" y="{top - 10}" font-size="12">{label}</text>']
    for tick in range(5):
        value = highest * tick / 4
        parts.append(f'<line x1="{LEFT - 4}" x2="{LEFT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#999"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y(value) + 4:.1f}" font-size="11" text-anchor="end">{label_of(value)}</text>')
    for minute in range(0, end // 60 + 1):
        at = minute * 60
        parts.append(f'<text x="{x(at):.1f}" y="{top + PANEL + 14}" font-size="11" text-anchor="middle">{minute}</text>')
    for index, (key, name) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(row['at_s']):.1f},{y(row[key]):.1f}" for row in rows)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        legend = top + 16 + 18 * index
        parts.append(f'<line x1="{WIDTH - RIGHT + 12}" x2="{WIDTH - RIGHT + 30}" y1="{legend - 4}" y2="{legend - 4}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 36}" y="{legend}" font-size="11">{name}</text>')
    return parts


def main():
    source, target = sys.argv[1:]
    with open(source) as file:
        rows = [json.loads(line) for line in file if line.strip()]
    if not rows:
        sys.exit("no rounds to plot")
    panels = [
        ([("set_p99_ms", "setPresence"), ("get_p99_ms", "GET presence"), ("notify_p99_ms", "notification")],
         "p99, ms"),
        ([("set_rate", "setPresence"), ("get_rate", "GET presence"), ("notified_rate", "notifications")],
         "per second"),
        ([("rss_mib", "presenced")], "resident, MiB"),
    ]
    height = TOP + len(panels) * (PANEL + GAP) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>']
    for number, (series, label) in enumerate(panels):
        parts += panel(rows, series, label, TOP + number * (PANEL + GAP))
    parts.append(f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{height - 4}" font-size="11" '
                 f'text-anchor="middle">minutes into the soak</text>')
    parts.append("</svg>")
    with open(target, "w") as file:
        file.write("\n".join(parts) + "\n")


main()
