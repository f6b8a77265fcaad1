"""The simulated network: requests and responses as timed messages.

Every message between a client, a broker and the coordinator travels through
here with a virtual delay, and the fault plan may drop, delay or duplicate it.
A dropped *response* is the canonical lost acknowledgement: the broker did the
work, the client never hears of it, and its timeout is an indefinite outcome.

Simplification (said in the notebooks too): a message whose sender has crashed
or restarted before it arrives is lost with the sender, as if it were still in
the dying process's socket buffer. Real TCP may or may not have sent it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Node(Protocol):
    """Anything that can send and receive: a broker, a client, the coordinator."""

    name: str
    alive: bool
    incarnation: int

    def receive(self, envelope: Envelope) -> None: ...


class Envelope:
    """One message in flight: who sent it to whom, for which API, and its body."""

    __slots__ = ("src", "dst", "api", "kind", "body", "correlation_id", "src_incarnation")

    def __init__(self, src: str, dst: str, api: str, kind: str, body: dict,
                 correlation_id: int, src_incarnation: int) -> None:
        self.src = src
        self.dst = dst
        self.api = api
        self.kind = kind  # "request" or "response"
        self.body = body
        self.correlation_id = correlation_id
        self.src_incarnation = src_incarnation

    def __repr__(self) -> str:
        return (f"<Envelope {self.kind} {self.api} {self.src}->{self.dst} "
                f"#{self.correlation_id}>")


# A filter sees each message as it is sent and answers (copies, extra delay in ms):
# (1, 0) leaves it alone, (0, 0) drops it, (2, 0) duplicates it.
MessageFilter = Callable[[Envelope], tuple[int, int]]


class Network:
    """Delivers envelopes between registered nodes after a fixed latency."""

    def __init__(self, world, latency_ms: int = 1) -> None:
        self.world = world
        self.latency_ms = latency_ms
        self.nodes: dict[str, Node] = {}
        self.filters: list[MessageFilter] = []
        self.cut: set[frozenset[str]] = set()
        self._correlation = 0

    def register(self, node: Node) -> None:
        """Make ``node`` reachable under its name (a restarted client re-registers)."""
        self.nodes[node.name] = node

    def next_correlation_id(self) -> int:
        """A fresh id to match a response to its request."""
        self._correlation += 1
        return self._correlation

    def disconnect(self, a: str, b: str) -> None:
        """Cut the link between two nodes: messages either way are lost."""
        self.cut.add(frozenset((a, b)))

    def reconnect(self, a: str, b: str) -> None:
        """Heal a link cut by :meth:`disconnect`."""
        self.cut.discard(frozenset((a, b)))

    def send(self, src: Node, dst: str, api: str, kind: str, body: dict,
             correlation_id: int) -> None:
        """Put a message on the wire; the fault plan decides if and when it arrives."""
        envelope = Envelope(src.name, dst, api, kind, body, correlation_id, src.incarnation)
        if frozenset((src.name, dst)) in self.cut:
            return
        copies, delay_ms = 1, self.latency_ms
        for message_filter in self.filters:
            more_copies, extra_ms = message_filter(envelope)
            # A drop by any filter is final; otherwise the most copies asked for win.
            copies = 0 if 0 in (copies, more_copies) else max(copies, more_copies)
            delay_ms += extra_ms
        for _ in range(copies):
            self.world.call_later(delay_ms, self._arrive, envelope)

    def _arrive(self, envelope: Envelope) -> None:
        src = self.nodes.get(envelope.src)
        dst = self.nodes.get(envelope.dst)
        if src is None or not src.alive or src.incarnation != envelope.src_incarnation:
            return
        if dst is None or not dst.alive:
            return
        if frozenset((envelope.src, envelope.dst)) in self.cut:
            return
        dst.receive(envelope)
