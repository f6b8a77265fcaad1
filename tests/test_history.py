"""course_lib.history: the ordered, timestamped record the checker reads, as JSON lines."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from course_lib.history import Event, History
from course_lib.sim import World

ROOT = Path(__file__).resolve().parent.parent

# A small but busy run: keyed and keyless produce to two partitions, a lost ack, a
# leader kill after the third ack and its return, then a consumer group reading it all.
# Run in this process and in fresh interpreters with other hash seeds.
DRIVER = r'''
import hashlib

from course_lib.cluster import Cluster
from course_lib.faults import DropMessages, FaultPlan, KillBroker, RestartBroker


def run(seed):
    plan = FaultPlan((DropMessages("produce", "response", count=1, skip=1),
                      KillBroker("leader", on="ack", nth=3),
                      RestartBroker(0, at_ms=20_000)))
    cluster = Cluster(brokers=3, seed=seed, faults=plan)
    cluster.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 2,
                                    "num.partitions": 2})
    producer = cluster.producer({"linger.ms": 0})
    for i in range(6):
        producer.produce("events", value=b"v%d\xff" % i, key=None if i % 2 else f"k{i}")
        producer.flush(60)
    cluster.settle(30_000)
    consumer = cluster.consumer({"group.id": "g", "auto.offset.reset": "earliest"})
    consumer.subscribe(["events"])
    while consumer.poll(1.0) is not None:
        pass
    consumer.close()
    return cluster.history.to_jsonl()
'''


def driver():
    namespace: dict = {}
    exec(compile(DRIVER, "history_driver", "exec"), namespace)
    return namespace["run"]


def digest_in_fresh_interpreter(seed: int, hash_seed: str) -> str:
    code = DRIVER + f"\nprint(hashlib.sha256(run({seed}).encode()).hexdigest())\n"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


# ----- recording -----------------------------------------------------------------------------

def test_record_stamps_the_worlds_virtual_time_in_order():
    world = World()
    world.history.record("a", "x", n=1)
    world.advance(250)
    event = world.history.record("b", "y", n=2)
    assert event == Event(250, "b", "y", {"n": 2})
    assert [(e.time_ms, e.kind) for e in world.history] == [(0, "a"), (250, "b")]
    assert len(world.history) == 2


def test_of_kind_filters_in_order():
    history = World().history
    for kind in ["ack", "send", "ack", "poll", "send"]:
        history.record(kind, "p", i=len(history))
    assert [e.data["i"] for e in history.of_kind("ack")] == [0, 2]
    assert [e.data["i"] for e in history.of_kind("send", "poll")] == [1, 3, 4]
    assert list(history.of_kind("commit")) == []


def test_history_is_append_only_through_record():
    world = World()
    history = History(world)
    history.record("a", "x")
    assert [e.kind for e in history.events] == ["a"]
    assert world.history is not history and len(world.history) == 0


# ----- JSON lines ----------------------------------------------------------------------------

def test_json_line_has_sorted_keys_and_the_event_fields():
    event = Event(12, "append", "broker-0", {"offset": 3, "topic": "events"})
    line = event.to_json()
    assert line == ('{"actor": "broker-0", "kind": "append", "offset": 3, "t": 12, '
                    '"topic": "events"}')


def test_bytes_are_rendered_as_text():
    event = Event(0, "send", "p", {"value": "café".encode(), "key": b"k1"})
    payload = json.loads(event.to_json())
    assert payload["value"] == "café"
    assert payload["key"] == "k1"


def test_bytes_that_are_not_utf8_stay_readable_and_distinct():
    payload = json.loads(Event(0, "send", "p", {"value": b"v\xff"}).to_json())
    assert payload["value"] == "v\\xff"


def test_bytes_inside_lists_and_dicts_are_rendered_as_text():
    payload = json.loads(Event(0, "truncate", "b", {"values": [b"a", None, b"b"],
                                                    "nested": {"v": b"c"}}).to_json())
    assert payload["values"] == ["a", None, "b"]
    assert payload["nested"] == {"v": "c"}


def test_sets_are_written_sorted():
    payload = json.loads(Event(0, "isr", "c", {"isr": {2, 0, 1}}).to_json())
    assert payload["isr"] == [0, 1, 2]


def test_to_jsonl_is_one_line_per_event():
    world = World()
    world.history.record("a", "x", v=b"1")
    world.history.record("b", "y", v=b"2")
    lines = world.history.to_jsonl().split("\n")
    assert [json.loads(line)["kind"] for line in lines] == ["a", "b"]


def test_identical_runs_give_byte_identical_json_lines(seed):
    run = driver()
    first, second = run(seed), run(seed)
    assert first == second
    kinds = {json.loads(line)["kind"] for line in first.split("\n")}
    # The run really exercised the system, so the comparison means something.
    assert {"send", "attempt", "append", "ack", "fault", "broker_crash", "poll"} <= kinds


def test_json_lines_do_not_depend_on_the_interpreters_hash_seed(seed):
    expected = hashlib.sha256(driver()(seed).encode()).hexdigest()
    assert digest_in_fresh_interpreter(seed, "1") == expected
    assert digest_in_fresh_interpreter(seed, "2") == expected


# ----- listeners -----------------------------------------------------------------------------

def test_listeners_are_called_after_each_event_is_appended():
    world = World()
    seen = []
    world.history.subscribe(lambda e: seen.append((e.kind, len(world.history))))
    world.history.record("a", "x")
    world.history.record("b", "x")
    assert seen == [("a", 1), ("b", 2)]


def test_every_listener_is_called_in_subscription_order():
    history = World().history
    calls = []
    history.subscribe(lambda e: calls.append(("first", e.kind)))
    history.subscribe(lambda e: calls.append(("second", e.kind)))
    history.record("x", "a")
    assert calls == [("first", "x"), ("second", "x")]


def test_a_listener_added_during_an_event_hears_only_later_events():
    history = World().history
    late = []

    def subscribe_another(event):
        if event.kind == "first":
            history.subscribe(lambda e: late.append(e.kind))

    history.subscribe(subscribe_another)
    history.record("first", "a")
    history.record("second", "a")
    assert late == ["second"]


def test_a_listener_may_record_an_event_of_its_own():
    history = World().history

    def react(event):
        if event.kind == "ack":
            history.record("fault", "nemesis", after=event.kind)

    history.subscribe(react)
    history.record("ack", "p")
    assert [e.kind for e in history] == ["ack", "fault"]
