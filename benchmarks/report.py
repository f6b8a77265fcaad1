"""The two outputs: the JSON file that is tracked over time, and a short table for people.

The JSON keeps everything (every sample, every count) so a later run can be
compared in detail; the table keeps one line per figure: the median, the
spread across repetitions, and the figure as a ratio against its baseline,
which is the number to compare across machines. Groups that cannot be
measured yet print their status instead of a number.
"""

from __future__ import annotations

import json
from pathlib import Path

HEADER = ("group", "figure", "median", "spread (min..max)", "vs baseline")
WIDTHS = (22, 36, 14, 24)


def write_json(results: dict, path: Path) -> None:
    """Write the results, creating the directory (benchmarks/results/ is not committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, allow_nan=False)  # NaN/inf are not JSON: fail loudly
    path.write_text(text + "\n", encoding="utf-8")


def number(value: float) -> str:
    """A count or rate, readable at a glance: 1,234,567 / 12.3 / 0.0123."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def times(value: float | None, baseline: str) -> str:
    """A ratio against a named baseline, e.g. ``0.16x SimPy`` (n/a when undefined)."""
    return "n/a" if value is None else f"{value:.2f}x {baseline}"


def duration(seconds: float) -> str:
    """A wall time in the unit that keeps it short."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def rate_cells(figures: dict, unit: str) -> tuple[str, str]:
    """Median and min..max of a ``<unit>_per_s`` rate."""
    return (number(figures[f"{unit}_per_s"]),
            f"{number(figures[f'{unit}_per_s_min'])}..{number(figures[f'{unit}_per_s_max'])}")


def baseline_rows(baseline: dict) -> list[tuple]:
    """The null loops every ratio is taken against."""
    rows = []
    for name, label in (("world", "World null loop events/s"),
                        ("simpy", "SimPy null loop events/s")):
        rows.append(("0 baseline", label, *rate_cells(baseline[name], "events"),
                     f"World/SimPy {baseline['ratio_world_to_simpy']:.2f}x"
                     if name == "world" else ""))
    return rows


def event_rows(group: dict) -> list[tuple]:
    """Group 1: both sides' events/s and acked/s, ratios against SimPy."""
    course, simpy = group["course_lib"], group["simpy"]
    return [
        ("1 event throughput", "course_lib events/s", *rate_cells(course, "events"),
         times(group["ratio_events_per_s_course_lib_to_simpy"], "SimPy")),
        ("", "SimPy events/s (same event count)", *rate_cells(simpy, "events"), "baseline"),
        ("", "course_lib acked msgs/s", *rate_cells(course, "acked"),
         times(group["ratio_acked_per_s_course_lib_to_simpy"], "SimPy")),
        ("", "SimPy acked msgs/s", *rate_cells(simpy, "acked"), "baseline"),
    ]


def scenario_rows(group: dict) -> list[tuple]:
    """Group 2: runs/s of each scenario, or its status."""
    rows = []
    for name, label in (("at_least_once", "at-least-once runs/s"),
                        ("transactional", "transactional runs/s")):
        part = group[name]
        first = "2 scenario throughput" if not rows else ""
        if part["status"] != "measured":
            rows.append((first, label, part["status"]))
            continue
        rows.append((first, f"{label} ({part['messages']} msgs)", *rate_cells(part, "runs"),
                     f"{number(part['cost_in_null_events'])} null events/run"))
    return rows


def grading_rows(group: dict) -> list[tuple]:
    """Group 3: autograding each reference solution against the one-cell floor."""
    if group["status"] != "measured":
        return [("3 grading cost", "", group["status"])]
    floor = group["floor"]["timing"]
    rows = [("3 grading cost", "autograde one-cell floor", duration(floor["median_s"]),
             f"{duration(floor['min_s'])}..{duration(floor['max_s'])}", "baseline")]
    for entry in group["assignments"]:
        timing = entry["timing"]
        label = f"autograde {entry['assignment']} ({entry['score']:g}/{entry['max_score']:g})"
        rows.append(("", label, duration(timing["median_s"]),
                     f"{duration(timing['min_s'])}..{duration(timing['max_s'])}",
                     f"{entry['ratio_to_floor']:.1f}x floor"))
    return rows


def widget_rows(group: dict) -> list[tuple]:
    """Group 4: the config-panel callback, median and p95, against the bare scenario."""
    if group["status"] != "measured":
        return [("4 widget latency", "", group["status"])]
    timing = group["timing"]
    return [("4 widget latency", "config-panel callback (median)", duration(group["median_s"]),
             f"{duration(timing['min_s'])}..{duration(timing['max_s'])}",
             f"{group['ratio_to_scenario_only']:.1f}x scenario alone"),
            ("", "config-panel callback (p95)", duration(group["p95_s"]), "",
             f"target {duration(group['target_s'])}")]


def notebook_rows(group: dict) -> list[tuple]:
    """Group 5: each notebook's run time against the kernel floor, or the status."""
    if group["status"] != "measured":
        return [("5 notebook run time", "", group["status"])]
    floor = group["floor"]["timing"]
    rows = [("5 notebook run time", "one-cell floor", duration(floor["median_s"]),
             f"{duration(floor['min_s'])}..{duration(floor['max_s'])}", "baseline")]
    for entry in group["notebooks"]:
        if entry["status"] != "measured":
            rows.append(("", entry["notebook"], entry["status"]))
            continue
        timing = entry["timing"]
        rows.append(("", entry["notebook"], duration(timing["median_s"]),
                     f"{duration(timing['min_s'])}..{duration(timing['max_s'])}",
                     f"{entry['ratio_to_floor']:.1f}x floor"))
    return rows


def scaling_rows(group: dict) -> list[tuple]:
    """Group 6: run time per size, with the per-message cost that shows linearity."""
    rows = []
    for entry in group["sizes"]:
        first = "6 scaling" if not rows else ""
        label = f"{entry['messages']:,} msgs"
        if entry["status"] != "measured":
            rows.append((first, label, entry["status"]))
            continue
        timing = entry["timing"]
        label += f" ({entry['per_message_us']:.1f} us/msg, x{timing['repeats']})"
        rows.append((first, label, duration(timing["median_s"]),
                     f"{duration(timing['min_s'])}..{duration(timing['max_s'])}",
                     f"{number(entry['per_message_in_null_events'])} null events/msg"))
    return rows


def status_row(label: str, group: dict) -> list[tuple]:
    """A group that is not measured: its status across the figure columns."""
    return [(label, "", group["status"])]


def format_row(row: tuple) -> str:
    """Fixed-width columns; a status row spans everything after the figure column."""
    if len(row) == 3:
        return f"{row[0]:<{WIDTHS[0]}} {row[1]:<{WIDTHS[1]}} {row[2]}".rstrip()
    cells = [f"{cell:<{width}}" for cell, width in zip(row, WIDTHS, strict=False)]
    return " ".join(cells + [row[-1]]).rstrip()


def format_table(results: dict) -> str:
    """The short stdout table: baselines, then groups 1 to 6."""
    groups = results["groups"]
    rows = baseline_rows(results["baseline"])
    rows += event_rows(groups["1_event_throughput"])
    rows += scenario_rows(groups["2_scenario_throughput"])
    rows += grading_rows(groups["3_grading_cost"])
    rows += widget_rows(groups["4_widget_latency"])
    rows += notebook_rows(groups["5_notebook_run_time"])
    rows += scaling_rows(groups["6_scaling"])
    meta = results["meta"]
    title = (f"benchmarks ({meta['mode']}, {meta['elapsed_s']:.1f} s, python {meta['python']}, "
             f"commit {(meta['commit'] or '?')[:10]}{' +dirty' if meta['dirty'] else ''})")
    header = format_row(HEADER)
    return "\n".join([title, header, "-" * len(header), *map(format_row, rows)])
