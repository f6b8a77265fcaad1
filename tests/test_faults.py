"""course_lib.faults: fault plans as plain data, and the injector that applies them."""

from __future__ import annotations

import json
import random

import pytest
from confluent_kafka import Message

from course_lib import faults
from course_lib.cluster import Cluster
from course_lib.faults import (
    FAULT_TYPES,
    Crash,
    CrashClient,
    DelayMessages,
    DropMessages,
    DuplicateMessages,
    FailProcessing,
    FaultPlan,
    Isolate,
    KillBroker,
    ProcessingError,
    RestartBroker,
    random_plan,
    single_crash_plans,
)

EVERY_KIND = FaultPlan((
    CrashClient("consumer.commit", "after", 3),
    FailProcessing(2),
    KillBroker("leader", on="ack", nth=4, lose_disk=True, topic="orders", partition=1),
    KillBroker(2, at_ms=1_500),
    RestartBroker(2, at_ms=9_000),
    DropMessages("fetch", "request", count=2, skip=5, src="consumer-1", dst="broker-0"),
    DelayMessages(250, api="offset_commit", kind="response", count=3, skip=1),
    DuplicateMessages("produce", "request", count=1, skip=2),
    Isolate(1, at_ms=100, until_ms=5_000),
))


def make_cluster(seed: int, *plan_faults) -> Cluster:
    """The conftest cluster (3 brokers, ``events`` RF=3, min.insync=2) under a fault plan."""
    cluster = Cluster(brokers=3, seed=seed, faults=FaultPlan(tuple(plan_faults)))
    cluster.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 2})
    return cluster


def kinds(cluster: Cluster) -> list[str]:
    return [event.kind for event in cluster.history]


def message(offset: int = 0, value: bytes = b"m") -> Message:
    return Message(topic="events", partition=0, offset=offset, value=value)


class Endpoint:
    """A bare network node that notes what reaches it and when."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.world = cluster.world
        self.name = name
        self.alive = True
        self.incarnation = 0
        self.received: list[tuple[int, int]] = []  # (arrival ms, message number)
        cluster.network.register(self)

    def receive(self, envelope) -> None:
        self.received.append((self.world.now_ms, envelope.body["n"]))


def send_numbered(cluster: Cluster, count: int, api: str = "produce",
                  kind: str = "request") -> Endpoint:
    """Send messages 1..count from node ``a`` to node ``b`` (1 ms latency); return ``b``."""
    a, b = Endpoint(cluster, "a"), Endpoint(cluster, "b")
    for n in range(1, count + 1):
        cluster.network.send(a, "b", api, kind, {"n": n}, cluster.network.next_correlation_id())
    cluster.world.advance(1_000)
    return b


# ----- Crash and ProcessingError ------------------------------------------------------------

def test_crash_is_a_base_exception_that_except_exception_cannot_swallow():
    assert issubclass(Crash, BaseException)
    assert not issubclass(Crash, Exception)
    swallowed = False
    with pytest.raises(Crash):
        try:
            raise Crash("app-1", "consumer.poll", "before")
        except Exception:  # what a learner's catch-all looks like
            swallowed = True
    assert not swallowed


def test_crash_says_who_died_where():
    crash = Crash("app-1", "consumer.commit", "after")
    assert (crash.actor, crash.point, crash.phase) == ("app-1", "consumer.commit", "after")
    assert str(crash) == "app-1 crashed after consumer.commit"


def test_processing_error_is_an_ordinary_exception():
    assert issubclass(ProcessingError, Exception)


# ----- FaultPlan as data -----------------------------------------------------------------------

def test_fault_plan_repr_is_valid_python_that_rebuilds_the_plan():
    rebuilt = eval(repr(EVERY_KIND), vars(faults))
    assert rebuilt == EVERY_KIND
    assert repr(rebuilt) == repr(EVERY_KIND)


@pytest.mark.parametrize("plan", [FaultPlan(), FaultPlan((FailProcessing(1),))],
                         ids=["empty", "single"])
def test_short_fault_plan_reprs_are_valid_python(plan):
    assert eval(repr(plan), vars(faults)) == plan


def test_fault_plan_survives_a_json_round_trip():
    text = EVERY_KIND.to_json()
    assert FaultPlan.from_json(text) == EVERY_KIND
    assert json.loads(text)[0] == {"type": "CrashClient", "point": "consumer.commit",
                                   "phase": "after", "nth": 3}


def test_fault_plan_json_is_compact_and_stable():
    text = EVERY_KIND.to_json()
    assert " " not in text.replace("consumer.commit", "")
    assert text == FaultPlan.from_json(text).to_json()


def test_every_fault_type_is_in_the_json_registry():
    assert {type(f).__name__ for f in EVERY_KIND.faults} == set(FAULT_TYPES)


def test_unknown_fault_type_is_rejected_by_name():
    with pytest.raises(ValueError, match="'UnplugDatacenter'"):
        FaultPlan.from_json('[{"type": "UnplugDatacenter", "at_ms": 5}]')


def test_without_removes_exactly_one_fault():
    plan = FaultPlan((FailProcessing(1), FailProcessing(2), FailProcessing(3)))
    assert plan.without(1) == FaultPlan((FailProcessing(1), FailProcessing(3)))
    assert plan.without(0) == FaultPlan((FailProcessing(2), FailProcessing(3)))
    assert len(plan) == 3  # the original is untouched


def test_plans_concatenate_in_order():
    first, second = FaultPlan((FailProcessing(1),)), FaultPlan((KillBroker(0, at_ms=5),))
    assert (first + second).faults == (FailProcessing(1), KillBroker(0, at_ms=5))


def test_faults_are_immutable_and_hashable():
    fault = DropMessages()
    with pytest.raises(AttributeError):
        fault.count = 5  # type: ignore[misc]
    assert len({EVERY_KIND, eval(repr(EVERY_KIND), vars(faults))}) == 1


# ----- enumeration and random plans ----------------------------------------------------------

def test_single_crash_plans_crash_before_and_after_every_call():
    trace = [("consumer.poll", 1), ("process", 1), ("consumer.poll", 2)]
    plans = single_crash_plans(trace)
    assert plans == [
        FaultPlan((CrashClient("consumer.poll", "before", 1),)),
        FaultPlan((CrashClient("consumer.poll", "after", 1),)),
        FaultPlan((CrashClient("process", "before", 1),)),
        FaultPlan((CrashClient("process", "after", 1),)),
        FaultPlan((CrashClient("consumer.poll", "before", 2),)),
        FaultPlan((CrashClient("consumer.poll", "after", 2),)),
    ]


def test_single_crash_plans_of_no_calls_is_empty():
    assert single_crash_plans([]) == []


RANDOM_ARGS = {"points": ["consumer.poll", "process", "consumer.commit"], "brokers": 3,
               "horizon_ms": 10_000}


def test_random_plan_is_deterministic_per_seed():
    assert random_plan(7, **RANDOM_ARGS) == random_plan(7, **RANDOM_ARGS)


def test_random_plans_differ_across_seeds():
    plans = {repr(random_plan(seed, **RANDOM_ARGS)) for seed in range(10)}
    assert len(plans) == 10


def test_random_plan_leaves_the_global_random_state_alone():
    random.seed(99)
    state = random.getstate()
    random_plan(3, **RANDOM_ARGS)
    assert random.getstate() == state


@pytest.mark.parametrize("seed", range(25))
def test_random_plan_stays_within_its_arguments(seed):
    plan = random_plan(seed, faults=4, **RANDOM_ARGS)
    assert len(plan) >= 4
    for index, fault in enumerate(plan.faults):
        if isinstance(fault, CrashClient):
            assert fault.point in RANDOM_ARGS["points"] and fault.phase in ("before", "after")
        elif isinstance(fault, KillBroker):
            assert 0 <= fault.broker < 3 and 0 <= fault.at_ms < 10_000
            restart = plan.faults[index + 1]
            assert isinstance(restart, RestartBroker) and restart.broker == fault.broker
            assert restart.at_ms > fault.at_ms
        elif isinstance(fault, DropMessages):
            assert fault.api in ("produce", "fetch", "offset_commit") and fault.count >= 1
        else:
            assert isinstance(fault, (RestartBroker, FailProcessing))


def test_random_plan_without_points_never_crashes_a_client():
    for seed in range(30):
        plan = random_plan(seed, points=[], brokers=3, horizon_ms=1_000)
        assert not any(isinstance(f, CrashClient) for f in plan.faults)


# ----- the injector: client crashes ------------------------------------------------------------

def test_crash_client_fires_at_the_nth_call_before_its_effect(seed):
    cluster = make_cluster(seed, CrashClient("producer.produce", "before", 2))
    producer = cluster.process("app").producer()
    producer.produce("events", b"first")
    with pytest.raises(Crash) as caught:
        producer.produce("events", b"second")
    assert (caught.value.point, caught.value.phase) == ("producer.produce", "before")
    sent = [e.data["value"] for e in cluster.history.of_kind("send")]
    assert sent == [b"first"]
    [crash] = cluster.history.of_kind("crash")
    assert crash.data == {"point": "producer.produce", "phase": "before", "nth": 2}
    assert crash.actor == "app-1"


def test_crash_client_after_the_call_keeps_its_effect(seed):
    cluster = make_cluster(seed, CrashClient("producer.produce", "after", 1))
    producer = cluster.process("app").producer()
    with pytest.raises(Crash):
        producer.produce("events", b"only")
    assert [e.data["value"] for e in cluster.history.of_kind("send")] == [b"only"]
    assert kinds(cluster).index("send") < kinds(cluster).index("crash")


def test_a_crashed_process_raises_crash_on_every_later_call_of_every_client(seed):
    cluster = make_cluster(seed, CrashClient("producer.flush", "before", 1))
    app = cluster.process("app")
    producer = app.producer()
    consumer = app.consumer({"group.id": "g"})
    process = app.processor()
    producer.produce("events", b"buffered")
    with pytest.raises(Crash):
        producer.flush(5)
    for call in (lambda: producer.produce("events", b"x"), lambda: producer.poll(0),
                 lambda: producer.flush(1), lambda: consumer.subscribe(["events"]),
                 lambda: consumer.poll(0.1), lambda: process(message())):
        with pytest.raises(Crash):
            call()
    assert len(list(cluster.history.of_kind("crash"))) == 1  # only the injected one is logged
    assert [e.data["values"] for e in cluster.history.of_kind("lost_buffer")] == [[b"buffered"]]


def test_a_crash_in_one_process_leaves_another_running(seed):
    cluster = make_cluster(seed, CrashClient("producer.produce", "before", 1))
    doomed = cluster.process("doomed").producer()
    with pytest.raises(Crash):
        doomed.produce("events", b"lost")
    survivor = cluster.process("survivor").producer()
    survivor.produce("events", b"kept")
    assert survivor.flush(10) == 0
    assert [e.data["value"] for e in cluster.history.of_kind("ack")] == [b"kept"]


def test_a_catch_all_in_application_code_cannot_swallow_an_injected_crash(seed):
    cluster = make_cluster(seed, CrashClient("producer.produce", "before", 1))
    producer = cluster.process("app").producer()

    def careless_send():
        try:
            producer.produce("events", b"x")
        except Exception:
            return "swallowed"
        return "sent"

    with pytest.raises(Crash):
        careless_send()


def test_crash_before_a_synchronous_commit_commits_nothing(seed):
    cluster = make_cluster(seed, CrashClient("consumer.commit", "before", 1))
    assert committed_after_crash(cluster) == (None, [])


def test_crash_after_a_synchronous_commit_keeps_the_commit(seed):
    cluster = make_cluster(seed, CrashClient("consumer.commit", "after", 1))
    assert committed_after_crash(cluster) == (1, [1])


def committed_after_crash(cluster: Cluster):
    producer = cluster.producer()
    producer.produce("events", b"a")
    assert producer.flush(10) == 0
    consumer = cluster.process("app").consumer({"group.id": "g", "enable.auto.commit": False,
                                                "auto.offset.reset": "earliest"})
    consumer.subscribe(["events"])
    msg = consumer.poll(5)
    assert msg is not None and msg.value() == b"a"
    with pytest.raises(Crash):
        consumer.commit(message=msg, asynchronous=False)
    commits = [e.data["offset"] for e in cluster.history.of_kind("commit")]
    return cluster.coordinator.committed("g", ("events", 0)), commits


@pytest.mark.parametrize("phase, effects_expected", [("before", []), ("after", [b"m"])])
def test_crash_in_process_before_skips_the_effect_after_keeps_it(seed, phase, effects_expected):
    cluster = make_cluster(seed, CrashClient("process", phase, 1))
    effects = []
    process = cluster.process("app").processor(lambda msg: effects.append(msg.value()))
    with pytest.raises(Crash):
        process(message())
    assert effects == effects_expected
    assert len(list(cluster.history.of_kind("process"))) == len(effects_expected)
    with pytest.raises(Crash):
        process(message(1))
    assert effects == effects_expected


def test_fail_processing_raises_processing_error_at_the_nth_call_only(seed):
    cluster = make_cluster(seed, FailProcessing(2))
    effects = []
    app = cluster.process("app")
    process = app.processor(lambda msg: effects.append(msg.offset()))
    process(message(0))
    with pytest.raises(ProcessingError):
        process(message(1))
    process(message(2))  # a transient failure: the process lives on
    assert effects == [0, 2]
    assert app.alive
    assert [e.data["offset"] for e in cluster.history.of_kind("process")] == [0, 2]
    assert any("FailProcessing" in e.data["fault"] for e in cluster.history.of_kind("fault"))


def test_call_trace_lists_each_call_with_its_count(seed):
    cluster = make_cluster(seed)
    producer = cluster.process("app").producer()
    producer.produce("events", b"a")
    producer.produce("events", b"b")
    producer.flush(10)
    assert cluster.faults.call_trace() == [("producer.produce", 1), ("producer.produce", 2),
                                           ("producer.flush", 1)]


def test_every_enumerated_single_crash_plan_crashes_exactly_where_it_says(seed):
    def app(cluster: Cluster) -> None:
        producer = cluster.process("app").producer()
        producer.produce("events", b"a")
        producer.produce("events", b"b")
        producer.flush(10)

    clean = make_cluster(seed)
    app(clean)
    plans = single_crash_plans(clean.faults.call_trace())
    assert len(plans) == 6
    for plan in plans:
        cluster = Cluster(brokers=3, seed=seed, faults=plan)
        cluster.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 2})
        with pytest.raises(Crash):
            app(cluster)
        [crash] = cluster.history.of_kind("crash")
        expected = plan.faults[0]
        assert crash.data == {"point": expected.point, "phase": expected.phase,
                              "nth": expected.nth}


# ----- the injector: messages ------------------------------------------------------------------

def test_drop_messages_loses_exactly_count_messages_after_skip(seed):
    cluster = make_cluster(seed, DropMessages("produce", "request", count=2, skip=1))
    receiver = send_numbered(cluster, 6)
    assert [n for _, n in receiver.received] == [1, 4, 5, 6]
    assert len(list(cluster.history.of_kind("fault"))) == 2


def test_drop_messages_counts_only_its_api_and_direction(seed):
    cluster = make_cluster(seed, DropMessages("fetch", "response", count=1))
    a, b = Endpoint(cluster, "a"), Endpoint(cluster, "b")
    for n, (api, kind) in enumerate([("fetch", "request"), ("produce", "response"),
                                     ("fetch", "response"), ("fetch", "response")], 1):
        cluster.network.send(a, "b", api, kind, {"n": n}, n)
    cluster.world.advance(10)
    assert [n for _, n in b.received] == [1, 2, 4]


def test_drop_messages_can_target_one_sender_and_receiver(seed):
    cluster = make_cluster(seed, DropMessages("produce", "request", count=5, src="c", dst="b"))
    a, b, c = Endpoint(cluster, "a"), Endpoint(cluster, "b"), Endpoint(cluster, "c")
    cluster.network.send(a, "b", "produce", "request", {"n": 1}, 1)
    cluster.network.send(c, "b", "produce", "request", {"n": 2}, 2)
    cluster.network.send(c, "a", "produce", "request", {"n": 3}, 3)
    cluster.world.advance(10)
    assert [n for _, n in b.received] == [1]
    assert [n for _, n in a.received] == [3]


def test_duplicate_messages_doubles_exactly_count_messages_after_skip(seed):
    cluster = make_cluster(seed, DuplicateMessages("produce", "request", count=2, skip=2))
    receiver = send_numbered(cluster, 5)
    assert [n for _, n in receiver.received] == [1, 2, 3, 3, 4, 4, 5]


def test_delay_messages_holds_back_exactly_count_messages_after_skip(seed):
    cluster = make_cluster(seed, DelayMessages(100, "produce", "request", count=2, skip=1))
    receiver = send_numbered(cluster, 4)
    assert sorted(receiver.received) == [(1, 1), (1, 4), (101, 2), (101, 3)]


def test_a_dropped_produce_response_makes_the_producer_retry(seed):
    cluster = make_cluster(seed, DropMessages("produce", "response", count=1))
    producer = cluster.producer({"request.timeout.ms": 1_000, "delivery.timeout.ms": 10_000})
    producer.produce("events", b"once")
    assert producer.flush(30) == 0
    assert len(list(cluster.history.of_kind("attempt"))) == 2
    cluster.settle(1_000)
    assert cluster.readable("events") == [b"once"]  # idempotence dropped the resend


# ----- the injector: brokers -------------------------------------------------------------------

@pytest.mark.parametrize("nth", [1, 2, 3])
def test_kill_broker_on_ack_fires_right_after_the_nth_ack(seed, nth):
    cluster = make_cluster(seed, KillBroker("leader", on="ack", nth=nth))
    producer = cluster.producer()
    for i in range(4):
        producer.produce("events", f"m{i}")
        assert producer.flush(120) == 0
    sequence = [k for k in kinds(cluster) if k in ("ack", "broker_crash")]
    assert sequence.index("broker_crash") == nth
    assert sequence.count("broker_crash") == 1
    [crash] = cluster.history.of_kind("broker_crash")
    assert crash.actor == "broker-0"  # the leader when the nth ack came
    assert cluster.leader("events") != 0


def test_kill_and_restart_broker_at_virtual_times(seed):
    cluster = make_cluster(seed, KillBroker(1, at_ms=1_000), RestartBroker(1, at_ms=3_000))
    cluster.world.run(until_ms=999)
    assert cluster.brokers[1].alive
    cluster.world.run(until_ms=1_000)
    assert not cluster.brokers[1].alive
    cluster.world.run(until_ms=2_999)
    assert not cluster.brokers[1].alive
    cluster.world.run(until_ms=3_000)
    assert cluster.brokers[1].alive
    assert [e.time_ms for e in cluster.history.of_kind("fault")] == [1_000, 3_000]


def test_kill_broker_with_lose_disk_empties_its_log(seed):
    cluster = make_cluster(seed, KillBroker(2, at_ms=2_000, lose_disk=True))
    producer = cluster.producer()
    producer.produce("events", b"x")
    assert producer.flush(10) == 0
    cluster.world.run(until_ms=2_000)
    assert cluster.brokers[2].logs[("events", 0)].log_end_offset == 0


def test_kill_leader_of_an_offline_partition_does_nothing(seed):
    cluster = make_cluster(seed, KillBroker("leader", at_ms=500))
    for broker in range(3):
        cluster.kill_broker(broker)
    cluster.world.run(until_ms=1_000)
    assert list(cluster.history.of_kind("broker_crash"))[-1].time_ms == 0


def broker_links(cluster: Cluster) -> set[frozenset[str]]:
    return {link for link in cluster.network.cut if all(n.startswith("broker-") for n in link)}


def link(a: int, b: int) -> frozenset[str]:
    return frozenset((f"broker-{a}", f"broker-{b}"))


def test_isolate_cuts_a_brokers_links_then_heals_them(seed):
    cluster = make_cluster(seed, Isolate(0, at_ms=100, until_ms=1_000))
    cluster.world.run(until_ms=99)
    assert broker_links(cluster) == set()
    cluster.world.run(until_ms=100)
    assert broker_links(cluster) == {link(0, 1), link(0, 2)}
    cluster.world.run(until_ms=999)
    assert broker_links(cluster) == {link(0, 1), link(0, 2)}
    cluster.world.run(until_ms=1_000)
    assert broker_links(cluster) == set()
    actions = [e.data["action"] for e in cluster.history.of_kind("fault")]
    assert actions == ["isolate", "heal"]


def test_isolate_without_an_end_stays_cut_and_shrinks_the_isr(seed):
    cluster = make_cluster(seed, Isolate(1, at_ms=0))
    cluster.world.run(until_ms=60_000)
    assert broker_links(cluster) == {link(1, 0), link(1, 2)}
    assert 1 not in cluster.partition(("events", 0)).isr


def test_overlapping_isolations_heal_only_when_both_have_ended(seed):
    cluster = make_cluster(seed, Isolate(0, at_ms=100, until_ms=1_000),
                           Isolate(1, at_ms=500, until_ms=2_000))
    cluster.world.run(until_ms=600)
    assert broker_links(cluster) == {link(0, 1), link(0, 2), link(1, 2)}
    cluster.world.run(until_ms=1_500)
    assert broker_links(cluster) == {link(0, 1), link(1, 2)}
    cluster.world.run(until_ms=2_500)
    assert broker_links(cluster) == set()
