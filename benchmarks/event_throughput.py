"""Group 1: events per second of course_lib against SimPy on the same workload.

The course_lib workload runs first and fixes the event count; the SimPy model
is then stepped for exactly that many events, so both sides process the same
number of events and only their speed differs. Because one "event" is not the
same unit in both (see the ``workload`` text in the JSON), the result also
gives acknowledged messages per second, and the bare-engine ratio from the
null loops, so a reader can tell engine cost from model cost.
"""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.course_partition import PRODUCER_CONFIG, run_course_lib
from benchmarks.settings import Settings
from benchmarks.simpy_partition import run_simpy
from benchmarks.timing import measure, rate, ratio, same_every_time

WORKLOAD = (
    "Both sides: {producers} producers each sending records one at a time (one in flight) "
    "to the leader of one partition with 3 replicas; the producer<->leader link drops a "
    "seeded {loss:.0%} of requests and responses; 1 ms link latency; a request unanswered "
    "after 100 ms is resent after a 100 ms backoff; the leader acknowledges once both "
    "followers hold the record (acks=all). course_lib: the real Cluster (3 brokers, RF=3, "
    "min.insync.replicas=2) and Producer clients with {config}, {messages} records each, "
    "run to completion; events = cluster.world.events_run (every callback the World ran: "
    "message arrivals, sender wake-ups, follower fetch timers; cancelled timers are popped "
    "but not counted). Its per-event work includes history recording, config, idempotent "
    "sequence checks, ISR and high-watermark bookkeeping. SimPy: an idiomatic model of the "
    "same flow (Store mailboxes, processes, timeouts, `reply | timeout` conditions) with "
    "none of that bookkeeping and no idempotence (resends are appended again); producers "
    "send forever and the environment is stepped exactly as many times as course_lib ran "
    "events (env.step(), the loop env.run() uses). A SimPy step is finer-grained (a Store "
    "put and get, the condition event and the request timeout that fires after its reply "
    "are separate events), so compare acked_per_s too. Timed: setup + the whole run, on "
    "both sides."
)


def course_lib_side(settings: Settings) -> tuple[dict, int]:
    """Time the course_lib workload; returns its figures and the event count to match."""
    timing, results = measure(
        lambda: run_course_lib(settings.producers, settings.messages_per_producer,
                               settings.loss_fraction, settings.seed),
        settings.repeats, settings.warmup)
    run = same_every_time(results, "course_lib workload")
    figures = {**asdict(run), **rate(run.events, timing, "events"),
               **rate(run.acked, timing, "acked"), "timing": timing.as_dict()}
    return figures, run.events


def simpy_side(settings: Settings, events: int) -> dict:
    """Time the SimPy model for exactly ``events`` steps."""
    timing, results = measure(
        lambda: run_simpy(settings.producers, settings.loss_fraction, events, settings.seed),
        settings.repeats, settings.warmup)
    run = same_every_time(results, "SimPy workload")
    return {**asdict(run), **rate(run.events, timing, "events"),
            **rate(run.acked, timing, "acked"), "timing": timing.as_dict()}


def measure_event_throughput(settings: Settings, baseline: dict) -> dict:
    """Group 1: both sides, their ratios, and the bare-engine ratio for context."""
    course, events = course_lib_side(settings)
    simpy_figures = simpy_side(settings, events)
    workload = WORKLOAD.format(producers=settings.producers, loss=settings.loss_fraction,
                               messages=settings.messages_per_producer,
                               config=dict(PRODUCER_CONFIG))
    return {
        "status": "measured",
        "workload": workload,
        "course_lib": course,
        "simpy": simpy_figures,
        "ratio_events_per_s_course_lib_to_simpy":
            ratio(course["events_per_s"], simpy_figures["events_per_s"]),
        "ratio_acked_per_s_course_lib_to_simpy":
            ratio(course["acked_per_s"], simpy_figures["acked_per_s"]),
        "baseline": "simpy (same number of events, same process run)",
        "engine_only_ratio_world_to_simpy": baseline["ratio_world_to_simpy"],
    }
