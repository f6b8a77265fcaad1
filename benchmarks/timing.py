"""Repeat a run after a warm-up and summarise its wall times.

One sample is noise: a GC pass, another process, a cold cache. Every figure
in the benchmarks is therefore the median of several timed repetitions taken
after untimed warm-up runs, reported with its spread (min, max and the
interquartile range) so a reader can see how much to trust it. Garbage from
the previous repetition is collected *outside* the timed region, so one run
does not pay for another's garbage; collection during a run stays on, as it
would be for a learner.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Wall times of the timed repetitions of one run, in seconds."""

    samples_s: tuple[float, ...]
    warmup: int

    @property
    def median_s(self) -> float:
        """The figure we report: robust to one slow outlier."""
        return statistics.median(self.samples_s)

    @property
    def min_s(self) -> float:
        """The fastest repetition: closest to the code's own cost."""
        return min(self.samples_s)

    @property
    def max_s(self) -> float:
        """The slowest repetition: how bad the noise got."""
        return max(self.samples_s)

    def quartiles_s(self) -> tuple[float, float]:
        """First and third quartile (both the single sample when there is only one)."""
        if len(self.samples_s) < 2:
            return self.samples_s[0], self.samples_s[0]
        q1, _q2, q3 = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return q1, q3

    def as_dict(self) -> dict:
        """Plain data for the JSON file."""
        q1, q3 = self.quartiles_s()
        return {"repeats": len(self.samples_s), "warmup": self.warmup,
                "median_s": self.median_s, "min_s": self.min_s, "max_s": self.max_s,
                "q1_s": q1, "q3_s": q3, "samples_s": list(self.samples_s)}


def measure(run: Callable[[], Any], repeats: int, warmup: int) -> tuple[Timing, list[Any]]:
    """Call ``run()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns the timing and every timed repetition's result, so the caller can
    check that a deterministic simulation did the same work each time.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    for _ in range(warmup):
        run()
    samples_s, results = [], []
    for _ in range(repeats):
        gc.collect()
        start_s = time.perf_counter()
        results.append(run())
        samples_s.append(time.perf_counter() - start_s)
    return Timing(tuple(samples_s), warmup), results


def rate(count: float, timing: Timing, unit: str) -> dict:
    """``count`` things per second at the median, fastest and slowest repetition.

    ``unit`` names the thing counted, e.g. ``"events"`` gives ``events_per_s``.
    """
    return {f"{unit}_per_s": count / timing.median_s,
            f"{unit}_per_s_min": count / timing.max_s,
            f"{unit}_per_s_max": count / timing.min_s}


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None (JSON null) when there is nothing to divide by."""
    return numerator / denominator if denominator else None


def same_every_time(results: list[Any], what: str) -> Any:
    """The one result all repetitions agree on; a difference means lost determinism."""
    first = results[0]
    for other in results[1:]:
        if other != first:
            raise AssertionError(f"{what} differed between repetitions: {first!r} vs {other!r}")
    return first
