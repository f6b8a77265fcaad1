"""course_lib.network: timed messages that a fault plan may drop, delay, duplicate or cut."""

from __future__ import annotations

import pytest

from course_lib.network import Envelope, Network
from course_lib.sim import World


class Endpoint:
    """The smallest Node: a name, liveness, an incarnation, and an inbox with arrival times."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.alive = True
        self.incarnation = 0
        self.inbox: list[tuple[int, Envelope]] = []

    def receive(self, envelope: Envelope) -> None:
        self.inbox.append((self.world.now_ms, envelope))

    def crash(self) -> None:
        self.alive = False
        self.incarnation += 1

    def restart(self) -> None:
        self.alive = True
        self.incarnation += 1

    def bodies(self) -> list[object]:
        return [envelope.body["n"] for _, envelope in self.inbox]


@pytest.fixture
def world() -> World:
    return World(seed=0)


@pytest.fixture
def net(world) -> Network:
    network = Network(world, latency_ms=3)
    for name in ("a", "b", "c"):
        network.register(Endpoint(world, name))
    return network


def node(net: Network, name: str) -> Endpoint:
    return net.nodes[name]  # type: ignore[return-value]


def send(net: Network, src: str, dst: str, n: object = 0, api: str = "produce",
         kind: str = "request") -> None:
    net.send(node(net, src), dst, api, kind, {"n": n}, net.next_correlation_id())


def settle(world: World) -> None:
    world.run(until_ms=world.now_ms + 10_000)


# ----- latency --------------------------------------------------------------------------------

def test_a_message_arrives_after_the_latency_with_its_envelope(world, net):
    world.advance(10)
    net.send(node(net, "a"), "b", "fetch", "request", {"n": 1}, 42)
    world.run(until_ms=12)
    assert node(net, "b").inbox == []
    world.run(until_ms=13)
    [(at_ms, envelope)] = node(net, "b").inbox
    assert at_ms == 13
    assert (envelope.src, envelope.dst, envelope.api, envelope.kind, envelope.body,
            envelope.correlation_id, envelope.src_incarnation) == (
        "a", "b", "fetch", "request", {"n": 1}, 42, 0)


def test_zero_latency_delivers_at_the_same_virtual_instant(world):
    network = Network(world, latency_ms=0)
    a, b = Endpoint(world, "a"), Endpoint(world, "b")
    network.register(a)
    network.register(b)
    world.advance(7)
    network.send(a, "b", "produce", "request", {"n": 1}, 1)
    world.run(until_ms=7)
    assert [at for at, _ in b.inbox] == [7]


def test_messages_sent_together_arrive_in_sending_order(world, net):
    for n in range(5):
        send(net, "a", "b", n)
    settle(world)
    assert node(net, "b").bodies() == [0, 1, 2, 3, 4]


def test_nothing_arrives_before_the_world_runs(world, net):
    send(net, "a", "b")
    assert node(net, "b").inbox == []


def test_correlation_ids_are_fresh_and_increasing(net):
    ids = [net.next_correlation_id() for _ in range(4)]
    assert ids == sorted(set(ids)) and ids[0] >= 1


def test_envelope_repr_names_kind_api_route_and_correlation():
    envelope = Envelope("a", "b", "produce", "response", {}, 7, 0)
    assert repr(envelope) == "<Envelope response produce a->b #7>"


# ----- filters: drop, duplicate, delay ------------------------------------------------------------

def test_a_filter_sees_each_message_as_it_is_sent(world, net):
    seen = []
    net.filters.append(lambda env: seen.append((env.api, env.kind, env.src, env.dst)) or (1, 0))
    send(net, "a", "b", api="fetch", kind="request")
    send(net, "b", "a", api="fetch", kind="response")
    assert seen == [("fetch", "request", "a", "b"), ("fetch", "response", "b", "a")]


def test_a_filter_answering_zero_copies_drops_the_message(world, net):
    net.filters.append(lambda env: (0, 0) if env.body["n"] == 1 else (1, 0))
    for n in range(3):
        send(net, "a", "b", n)
    settle(world)
    assert node(net, "b").bodies() == [0, 2]


def test_a_filter_answering_two_copies_duplicates_the_message(world, net):
    net.filters.append(lambda env: (2, 0) if env.body["n"] == 1 else (1, 0))
    for n in range(3):
        send(net, "a", "b", n)
    settle(world)
    assert node(net, "b").bodies() == [0, 1, 1, 2]


def test_a_filter_adds_delay_on_top_of_the_latency(world, net):
    net.filters.append(lambda env: (1, 50) if env.body["n"] == 0 else (1, 0))
    send(net, "a", "b", 0)
    send(net, "a", "b", 1)
    settle(world)
    assert [(at, env.body["n"]) for at, env in node(net, "b").inbox] == [(3, 1), (53, 0)]


def test_a_drop_by_one_filter_is_not_undone_by_a_later_one(world, net):
    net.filters.append(lambda env: (0, 0))
    net.filters.append(lambda env: (1, 0))
    net.filters.append(lambda env: (2, 0))
    send(net, "a", "b")
    settle(world)
    assert node(net, "b").inbox == []


def test_filters_combine_copies_and_add_delays(world, net):
    net.filters.append(lambda env: (2, 10))
    net.filters.append(lambda env: (1, 5))
    send(net, "a", "b")
    settle(world)
    assert [at for at, _ in node(net, "b").inbox] == [18, 18]


# ----- cut links ---------------------------------------------------------------------------------

def test_a_cut_link_loses_messages_both_ways_and_only_that_link(world, net):
    net.disconnect("a", "b")
    send(net, "a", "b", 1)
    send(net, "b", "a", 2)
    send(net, "a", "c", 3)
    send(net, "c", "b", 4)
    settle(world)
    assert node(net, "b").bodies() == [4]
    assert node(net, "a").bodies() == []
    assert node(net, "c").bodies() == [3]


def test_reconnect_heals_the_link(world, net):
    net.disconnect("a", "b")
    net.reconnect("b", "a")
    send(net, "a", "b", 1)
    settle(world)
    assert node(net, "b").bodies() == [1]


def test_a_message_in_flight_when_the_link_is_cut_is_lost(world, net):
    send(net, "a", "b", 1)
    world.run(until_ms=1)
    net.disconnect("a", "b")
    settle(world)
    assert node(net, "b").inbox == []


def test_a_message_sent_while_cut_is_lost_even_if_the_link_heals_before_arrival(world, net):
    net.disconnect("a", "b")
    send(net, "a", "b", 1)
    net.reconnect("a", "b")
    settle(world)
    assert node(net, "b").inbox == []


def test_reconnecting_a_link_that_was_never_cut_is_harmless(world, net):
    net.reconnect("a", "b")
    send(net, "a", "b", 1)
    settle(world)
    assert node(net, "b").bodies() == [1]


# ----- crashed senders and dead receivers ---------------------------------------------------

def test_a_message_from_a_sender_that_crashed_before_it_arrived_is_lost(world, net):
    send(net, "a", "b", 1)
    node(net, "a").crash()
    settle(world)
    assert node(net, "b").inbox == []


def test_a_message_from_a_sender_that_crashed_and_restarted_is_lost(world, net):
    send(net, "a", "b", 1)
    world.run(until_ms=1)
    node(net, "a").crash()
    node(net, "a").restart()
    send(net, "a", "b", 2)  # the new incarnation's message still arrives
    settle(world)
    assert node(net, "b").bodies() == [2]
    assert node(net, "b").inbox[0][1].src_incarnation == 2


def test_a_message_to_a_dead_node_is_dropped(world, net):
    node(net, "b").crash()
    send(net, "a", "b", 1)
    settle(world)
    node(net, "b").restart()
    settle(world)
    assert node(net, "b").inbox == []


def test_a_message_to_a_node_that_dies_while_it_travels_is_dropped(world, net):
    send(net, "a", "b", 1)
    world.run(until_ms=2)
    node(net, "b").crash()
    settle(world)
    assert node(net, "b").inbox == []


def test_a_message_to_an_unknown_node_vanishes(world, net):
    send(net, "a", "nobody", 1)
    settle(world)
    assert all(node(net, n).inbox == [] for n in ("a", "b", "c"))


def test_a_re_registered_node_receives_under_the_same_name(world, net):
    replacement = Endpoint(world, "b")
    net.register(replacement)
    send(net, "a", "b", 1)
    settle(world)
    assert replacement.bodies() == [1]
    assert node(net, "b") is replacement
