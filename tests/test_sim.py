"""course_lib.sim: the World's virtual clock, event queue and seeded random streams."""

from __future__ import annotations

import random

import pytest

from course_lib.cluster import Cluster
from course_lib.sim import World


def recorder(world: World, log: list):
    """A callback that notes (virtual time, label) when it runs."""

    def note(label):
        log.append((world.now_ms, label))

    return note


# ----- ordering -----------------------------------------------------------------------

def test_events_run_in_time_order_whatever_the_scheduling_order():
    world, log = World(), []
    note = recorder(world, log)
    world.call_at(30, note, "c")
    world.call_at(10, note, "a")
    world.call_at(20, note, "b")
    world.run(until_ms=100)
    assert log == [(10, "a"), (20, "b"), (30, "c")]


def test_events_at_the_same_instant_run_first_in_first_out():
    world, log = World(), []
    note = recorder(world, log)
    for label in ["first", "second", "third", "fourth", "fifth"]:
        world.call_at(7, note, label)
    world.call_at(3, note, "earlier")
    world.run(until_ms=10)
    assert [label for _, label in log] == ["earlier", "first", "second", "third", "fourth",
                                           "fifth"]


def test_an_event_scheduled_for_now_from_a_callback_runs_after_those_already_due():
    world, log = World(), []
    note = recorder(world, log)

    def spawn():
        note("spawner")
        world.call_later(0, note, "spawned")

    world.call_at(5, spawn)
    world.call_at(5, note, "queued")
    world.run(until_ms=5)
    assert log == [(5, "spawner"), (5, "queued"), (5, "spawned")]


def test_call_later_is_relative_to_the_current_time():
    world, log = World(), []
    note = recorder(world, log)
    world.advance(40)
    world.call_later(15, note, "x")
    world.run(until_ms=100)
    assert log == [(55, "x")]


def test_an_event_in_the_past_runs_now_not_back_in_time():
    world, log = World(), []
    note = recorder(world, log)
    world.advance(50)
    timer = world.call_at(10, note, "late")
    assert timer.at_ms == 50
    world.run(until_ms=60)
    assert log == [(50, "late")]


def test_callback_gets_its_arguments():
    world, got = World(), []
    world.call_later(1, lambda *args: got.append(args), 1, "two", None)
    world.run(until_ms=1)
    assert got == [(1, "two", None)]


# ----- cancel ---------------------------------------------------------------------------

def test_a_cancelled_timer_never_runs_and_is_not_counted():
    world, log = World(), []
    note = recorder(world, log)
    world.call_at(5, note, "kept")
    cancelled = world.call_at(6, note, "cancelled")
    cancelled.cancel()
    world.run(until_ms=10)
    assert log == [(5, "kept")]
    assert world.events_run == 1


def test_cancelling_a_timer_that_already_ran_is_harmless():
    world, log = World(), []
    timer = world.call_at(1, recorder(world, log), "ran")
    world.run(until_ms=2)
    timer.cancel()
    world.run(until_ms=3)
    assert log == [(1, "ran")]


def test_a_callback_can_cancel_a_later_event_at_the_same_instant():
    world, log = World(), []
    note = recorder(world, log)
    later = None

    def cancel_other():
        later.cancel()

    world.call_at(4, cancel_other)
    later = world.call_at(4, note, "never")
    world.run(until_ms=4)
    assert log == []


# ----- run bounds -------------------------------------------------------------------------

def test_run_until_ms_leaves_the_clock_at_until_ms_even_with_nothing_to_do():
    world = World()
    assert world.run(until_ms=1_234) is False
    assert world.now_ms == 1_234


def test_run_until_ms_leaves_the_clock_at_until_ms_after_the_last_event():
    world, log = World(), []
    world.call_at(100, recorder(world, log), "only")
    world.run(until_ms=30_000)
    assert log == [(100, "only")]
    assert world.now_ms == 30_000


def test_run_until_ms_runs_events_at_the_bound_and_keeps_later_ones():
    world, log = World(), []
    note = recorder(world, log)
    world.call_at(10, note, "at bound")
    world.call_at(11, note, "after bound")
    world.run(until_ms=10)
    assert log == [(10, "at bound")]
    assert world.now_ms == 10
    world.run(until_ms=20)
    assert log == [(10, "at bound"), (11, "after bound")]


def test_run_until_ms_in_the_past_does_not_move_the_clock_back():
    world = World()
    world.advance(100)
    world.run(until_ms=50)
    assert world.now_ms == 100


def test_run_until_condition_stops_at_the_event_that_meets_it():
    world, log = World(), []
    note = recorder(world, log)
    for at in (10, 20, 30, 40):
        world.call_at(at, note, at)
    met = world.run(until=lambda: len(log) == 2)
    assert met is True
    assert world.now_ms == 20
    assert [label for _, label in log] == [10, 20]
    world.run(until_ms=100)
    assert [label for _, label in log] == [10, 20, 30, 40]


def test_run_until_condition_already_true_runs_nothing():
    world, log = World(), []
    world.call_at(0, recorder(world, log), "x")
    assert world.run(until=lambda: True) is True
    assert log == [] and world.now_ms == 0


def test_run_until_condition_that_never_holds_returns_false_when_the_queue_empties():
    world, log = World(), []
    world.call_at(8, recorder(world, log), "x")
    assert world.run(until=lambda: False) is False
    assert world.now_ms == 8


def test_run_with_both_bounds_stops_at_whichever_comes_first():
    world, log = World(), []
    note = recorder(world, log)
    for at in (10, 20, 30):
        world.call_at(at, note, at)
    assert world.run(until_ms=25, until=lambda: len(log) == 3) is False
    assert world.now_ms == 25 and len(log) == 2
    assert world.run(until_ms=1_000, until=lambda: len(log) == 3) is True
    assert world.now_ms == 30


def test_run_without_a_bound_raises_value_error():
    world = World()
    world.call_at(1, lambda: None)
    with pytest.raises(ValueError, match="until"):
        world.run()
    assert world.events_run == 0


def test_advance_lets_time_pass_and_runs_what_falls_due():
    world, log = World(), []
    note = recorder(world, log)
    world.call_at(5, note, "a")
    world.call_at(15, note, "b")
    world.advance(10)
    assert log == [(5, "a")] and world.now_ms == 10
    world.advance(10)
    assert log == [(5, "a"), (15, "b")] and world.now_ms == 20


def test_periodic_work_stops_at_until_ms():
    world, ticks = World(), []

    def tick():
        ticks.append(world.now_ms)
        world.call_later(100, tick)

    world.call_at(0, tick)
    world.run(until_ms=450)
    assert ticks == [0, 100, 200, 300, 400]
    assert world.now_ms == 450


# ----- random streams ------------------------------------------------------------------------

def draws(stream: random.Random, n: int = 8) -> list[float]:
    return [stream.random() for _ in range(n)]


def test_a_named_stream_is_reproducible_for_a_seed(seed):
    assert draws(World(seed).rng("network")) == draws(World(seed).rng("network"))


def test_streams_with_different_names_differ(seed):
    world = World(seed)
    assert draws(world.rng("network")) != draws(world.rng("producer/producer-1"))


def test_streams_differ_across_seeds():
    assert draws(World(1).rng("network")) != draws(World(2).rng("network"))


def test_drawing_from_one_stream_does_not_shift_another(seed):
    untouched = draws(World(seed).rng("b"))
    world = World(seed)
    noisy = world.rng("a")
    draws(noisy, 1_000)
    assert draws(world.rng("b")) == untouched


def test_streams_do_not_use_or_disturb_the_global_random_state(seed):
    random.seed(12345)
    state = random.getstate()
    draws(World(seed).rng("x"), 100)
    assert random.getstate() == state


def test_a_whole_cluster_run_leaves_the_global_random_state_alone(seed):
    random.seed(777)
    state = random.getstate()
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic("events", {"replication.factor": 3, "num.partitions": 3})
    producer = cluster.producer()
    for i in range(5):
        producer.produce("events", f"m{i}")
    assert producer.flush(10) == 0
    cluster.kill_broker(0)
    cluster.settle(1_000)
    assert random.getstate() == state


# ----- isolation between Worlds -------------------------------------------------------------

def test_two_worlds_keep_separate_clocks_queues_and_histories():
    a, b = World(seed=1), World(seed=1)
    log_a, log_b = [], []
    a.call_at(10, recorder(a, log_a), "a")
    b.call_at(5, recorder(b, log_b), "b")
    a.history.record("only_in_a", "test")
    a.run(until_ms=100)
    assert log_a == [(10, "a")] and log_b == []
    assert a.now_ms == 100 and b.now_ms == 0
    assert len(b.history) == 0
    b.run(until_ms=5)
    assert log_b == [(5, "b")] and a.now_ms == 100


def test_two_clusters_interleaved_give_the_same_history_as_one_alone(seed):
    def build():
        cluster = Cluster(brokers=3, seed=seed)
        cluster.create_topic("events", {"replication.factor": 3, "num.partitions": 2})
        return cluster, cluster.producer()

    alone, producer = build()
    for i in range(4):
        producer.produce("events", f"v{i}")
        producer.flush(5)
    expected = alone.history.to_jsonl()

    first, p1 = build()
    second, p2 = build()
    for i in range(4):
        p1.produce("events", f"v{i}")
        p2.produce("events", f"other{i}")
        p2.flush(5)
        p1.flush(5)
    assert first.history.to_jsonl() == expected
    assert second.history.to_jsonl() != expected


def test_world_repr_is_valid_python():
    world = World(seed=42)
    assert repr(world) == "World(seed=42)"
    assert eval(repr(world), {"World": World}).seed == 42
