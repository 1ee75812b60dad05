#!/usr/bin/env python3
"""Medians of `scripts/bench.sh compare` runs, one table row per metric.

    python3 scripts/bench-summary.py RESULTS.jsonl

Reads the JSON lines the compare step wrote (the bench's own results with
"target" and "run" added), groups them by cell (scenario and its variant:
the fan-out rate, gentle or storm idle) and target, and prints the median
of each metric over the runs, with the number of runs in brackets. Runs
that failed (a line without "scenario") are counted in a row of their own. Standard library only."""
import json
import statistics
import sys

# Per cell: (label, path into the result) of the metrics worth a row.
METRICS = {
    "ping": [
        ("calls/s", ("calls_per_second",)),
        ("p50 µs", ("latency", "p50_us")),
        ("p99 µs", ("latency", "p99_us")),
    ],
    "fanout": [
        ("deliveries/s", ("deliveries_per_second",)),
        ("lost", ("lost",)),
        ("p50 µs", ("latency", "p50_us")),
        ("p99 µs", ("latency", "p99_us")),
        ("subscribe s", ("subscribe_seconds",)),
    ],
    "idle": [
        ("bytes/conn", ("bytes_per_connection",)),
        ("open s", ("open_seconds",)),
    ],
    "storm": [
        ("opened", ("opened",)),
        ("open s", ("open_seconds",)),
        ("peak KiB", ("rss_peak_kib",)),
        ("bytes/conn (held)", ("bytes_per_connection",)),
        ("after close KiB", ("rss_after_close_kib",)),
        ("after/before", ("after_before_ratio",)),
        ("after/cold", ("after_cold_ratio",)),
        ("anon before KiB", ("anon_before_kib",)),
        ("anon after KiB", ("anon_after_close_kib",)),
        ("closed cleanly", ("closed_cleanly",)),
    ],
}


def cell_of(result):
    scenario = result.get("scenario")
    if scenario == "fanout":
        return "fanout", f"fanout {result.get('publish_rate')}/s"
    if scenario == "idle":
        kind = "storm" if result.get("mode") == "storm" else "idle"
        return kind, f"{kind} {result.get('connections')}"
    return scenario, scenario


def dig(result, path):
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result if isinstance(result, (int, float)) else None


def fmt(values):
    if not values:
        return "-"
    median = statistics.median(values)
    if float(median).is_integer() or median >= 10:
        text = f"{median:,.0f}"
    else:
        text = f"{median:,.3f}"
    return f"{text} [{len(values)}]"


def main(path):
    targets, cells, values, failed = [], {}, {}, {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            result = json.loads(line)
            target = result.get("target", "?")
            if target not in targets:
                targets.append(target)
            if "scenario" not in result:
                failed[target] = failed.get(target, 0) + 1
                continue
            kind, cell = cell_of(result)
            cells.setdefault(cell, kind)
            for label, key in METRICS.get(kind, []):
                value = dig(result, key)
                if value is not None:
                    values.setdefault((cell, label, target), []).append(value)
    header = ["cell", "metric"] + targets
    rows = [header, ["---"] * len(header)]
    for cell, kind in cells.items():
        for label, _ in METRICS.get(kind, []):
            rows.append([cell, label] + [fmt(values.get((cell, label, t), [])) for t in targets])
    if failed:
        rows.append(["all", "failed runs"] + [str(failed.get(t, 0)) for t in targets])
    print("medians over the runs [runs]:")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
