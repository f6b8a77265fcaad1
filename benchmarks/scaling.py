"""Group 6: how the at-least-once scenario's run time grows with the number of messages.

The course promises that a bigger scenario costs proportionally more, not
disproportionately more; the per-message cost at each size makes that
visible (flat means linear), and ``time_ratio_to_previous`` should be close
to the size ratio. Large sizes are expensive, so each size first extrapolates
its run time from the previous one: a size estimated over the run budget is
skipped and says so, and repetitions at a size are cut to fit its budget
(warm-ups first, then repeats, never below one).
"""

from __future__ import annotations

from benchmarks.at_least_once import run_at_least_once
from benchmarks.scenario_throughput import relative_to_null_loop
from benchmarks.settings import Settings
from benchmarks.timing import measure, same_every_time


def estimate_s(previous: dict | None, messages: int) -> float | None:
    """Linear extrapolation from the last measured size (None for the first size)."""
    if previous is None:
        return None
    return previous["timing"]["median_s"] * messages / previous["messages"]


def repetitions(estimated_s: float | None, settings: Settings) -> tuple[int, int]:
    """(repeats, warmup) that fit the size budget, given the estimated run time."""
    if estimated_s is None:
        return settings.repeats, settings.warmup
    fits = int(settings.size_budget_s // max(estimated_s, 1e-9))
    repeats = max(1, min(settings.repeats, fits))
    warmup = max(0, min(settings.warmup, fits - repeats))
    return repeats, warmup


def measure_size(messages: int, repeats: int, warmup: int, settings: Settings,
                 baseline: dict) -> dict:
    """Time the scenario at one size and express its cost per message."""
    timing, results = measure(lambda: run_at_least_once(messages, settings.seed),
                              repeats, warmup)
    run = same_every_time(results, f"at-least-once scenario with {messages} messages")
    per_message_s = timing.median_s / messages
    relative = relative_to_null_loop(timing, run.events, baseline)
    return {
        "messages": messages,
        "status": "measured",
        "events": run.events,
        "events_per_message": run.events / messages,
        "guarantee": run.guarantee,
        "lost": run.lost,
        "duplicated": run.duplicated,
        "per_message_us": per_message_s * 1e6,
        "per_message_us_min": timing.min_s / messages * 1e6,
        "per_message_us_max": timing.max_s / messages * 1e6,
        "per_message_in_null_events": relative["cost_in_null_events"] / messages,
        "timing": timing.as_dict(),
    }


def skipped(messages: int, estimated_s: float, settings: Settings) -> dict:
    """The entry for a size that would blow the run budget."""
    return {"messages": messages, "estimated_s": estimated_s,
            "status": f"skipped: estimated {estimated_s:.1f} s per run (linear from the "
                      f"previous size) exceeds the {settings.run_budget_s:.0f} s budget"}


def measure_scaling(settings: Settings, baseline: dict) -> dict:
    """Group 6: every size in order, each compared with the one before."""
    sizes, previous = [], None
    for messages in settings.scaling_sizes:
        estimated = estimate_s(previous, messages)
        if estimated is not None and estimated > settings.run_budget_s:
            sizes.append(skipped(messages, estimated, settings))
            continue
        entry = measure_size(messages, *repetitions(estimated, settings), settings, baseline)
        if previous is not None:
            entry["time_ratio_to_previous"] = (entry["timing"]["median_s"]
                                               / previous["timing"]["median_s"])
            entry["size_ratio_to_previous"] = messages / previous["messages"]
        if estimated is not None:
            entry["estimated_s"] = estimated
        sizes.append(entry)
        previous = entry
    return {"status": "measured", "scenario": "at-least-once, one consumer crash, checker "
            "included (benchmarks/at_least_once.py)",
            "baseline": "world null loop (same process run)", "sizes": sizes}
