"""Baselines: the bare event loops of course_lib's World and of SimPy, doing nothing.

Every other figure is divided by one of these, measured in the same process
run, so that a slow or busy machine shifts the baseline and the figure
together and the ratio still compares across machines. The null loop is one
callback that reschedules itself one virtual millisecond later: per event it
costs exactly one schedule, one pop and one dispatch, the floor under any
model built on the engine.
"""

from __future__ import annotations

import simpy

from benchmarks.settings import Settings
from benchmarks.timing import measure, rate, same_every_time
from course_lib.sim import World


def world_null_loop(events: int) -> int:
    """Run ``events`` self-rescheduling no-op callbacks in a World; returns events run."""
    world = World(seed=0)

    def tick() -> None:
        world.call_later(1, tick)

    world.call_at(0, tick)
    world.run(until_ms=events - 1)
    return world.events_run


def simpy_null_loop(events: int) -> int:
    """Step a SimPy process that only waits 1 time unit, ``events`` times; returns steps."""
    env = simpy.Environment()

    def ticker(env: simpy.Environment):
        while True:
            yield env.timeout(1)

    env.process(ticker(env))
    for _ in range(events):
        env.step()
    return events


def measure_null_loops(settings: Settings) -> dict:
    """Events/s of both bare loops and their ratio: the engines' own speed."""
    out = {"what": "one no-op callback rescheduling itself every virtual ms; "
                   "events/s is the engine's floor cost per event"}
    for name, loop in (("world", world_null_loop), ("simpy", simpy_null_loop)):
        timing, results = measure(lambda loop=loop: loop(settings.null_loop_events),
                                  settings.repeats, settings.warmup)
        events = same_every_time(results, f"{name} null-loop event count")
        out[name] = {"events": events, **rate(events, timing, "events"),
                     "timing": timing.as_dict()}
    out["ratio_world_to_simpy"] = out["world"]["events_per_s"] / out["simpy"]["events_per_s"]
    return out
