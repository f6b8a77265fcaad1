"""Group 2: complete scenario runs per second, the unit a learner and the grader wait for.

Runs per second depend on the machine, so each figure is also expressed in
units of the bare World loop measured in the same process run: how many
no-op events the engine could have run in the time one scenario took, and
how fast the scenario's own events go compared to no-op ones. Those two
numbers move only when course_lib's code changes, not when the machine does.
"""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.at_least_once import run_at_least_once
from benchmarks.settings import Settings
from benchmarks.timing import Timing, measure, rate, same_every_time
from benchmarks.transactional import run_transactional


def relative_to_null_loop(timing: Timing, events: int, baseline: dict) -> dict:
    """A run's cost in bare-World-event units (same process run, so machine-independent)."""
    null_events_per_s = baseline["world"]["events_per_s"]
    return {
        "cost_in_null_events": timing.median_s * null_events_per_s,
        "slowdown_per_event_vs_null_loop": null_events_per_s * timing.median_s / events,
    }


def _throughput(play, name: str, story: str, settings: Settings, baseline: dict) -> dict:
    """Runs/s of one scenario (checker included), repeated and checked to be the same."""
    messages = settings.scenario_messages
    timing, results = measure(lambda: play(messages, settings.seed),
                              settings.scenario_repeats, settings.warmup)
    run = same_every_time(results, name)
    return {
        "status": "measured",
        "scenario": f"{messages} messages, {story}",
        **asdict(run),
        **rate(1, timing, "runs"),
        **rate(run.events, timing, "events"),
        **relative_to_null_loop(timing, run.events, baseline),
        "baseline": "world null loop (same process run)",
        "timing": timing.as_dict(),
    }


def measure_scenario_throughput(settings: Settings, baseline: dict) -> dict:
    """Group 2: the at-least-once scenario and the transactional one."""
    return {
        "at_least_once": _throughput(
            run_at_least_once, "at-least-once scenario",
            "3 brokers, one consumer crash before a commit, process-then-commit loop, "
            "restart, checker", settings, baseline),
        "transactional": _throughput(
            run_transactional, "transactional scenario",
            "in transactions of 10, 3 brokers, one producer crash before a commit, restart "
            "(the open transaction is aborted), read_committed process-then-commit consumer, "
            "checker", settings, baseline),
    }
