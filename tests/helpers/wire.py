"""A bare network node for tests that need to say exactly what a broker receives.

The simulated Producer and Consumer always know the current leader and fill in
every field correctly, so some requests a real broker must handle (a produce to
a broker that is no longer leader, a retried idempotent batch sent on purpose,
an offset commit from an old generation) cannot be made with them on demand.
:class:`Probe` registers on the cluster's real network like any client, sends
hand-built requests through it (so latency, cuts and the fault plan apply), and
keeps every response with its virtual arrival time.
"""

from __future__ import annotations


class Probe:
    """A network node that sends raw requests and remembers the responses."""

    def __init__(self, cluster, name: str = "probe") -> None:
        self.cluster = cluster
        self.world = cluster.world
        self.name = name
        self.alive = True
        self.incarnation = 0
        self.responses: dict[int, tuple[int, dict]] = {}  # correlation -> (arrival ms, body)
        cluster.network.register(self)

    def receive(self, envelope) -> None:
        self.responses[envelope.correlation_id] = (self.world.now_ms, envelope.body)

    def send(self, dst: str, api: str, body: dict) -> int:
        """Put one request on the wire; returns its correlation id."""
        correlation = self.cluster.network.next_correlation_id()
        self.cluster.network.send(self, dst, api, "request", body, correlation)
        return correlation

    def produce(self, broker: int, values: list[bytes], *, acks: str = "all",
                topic: str = "events", partition: int = 0, timeout_ms: int = 30_000,
                producer_id: int = -1, producer_epoch: int = -1, base_seq: int = -1) -> int:
        """A Produce request for one batch, sent to ``broker`` whether it leads or not."""
        return self.send(self.cluster.broker_name(broker), "produce", {
            "topic": topic, "partition": partition, "records": [(None, v) for v in values],
            "acks": acks, "producer_id": producer_id, "producer_epoch": producer_epoch,
            "base_seq": base_seq, "timeout_ms": timeout_ms,
        })

    def fetch(self, broker: int, offset: int, *, topic: str = "events", partition: int = 0,
              max_wait_ms: int = 0, max_records: int = 500) -> int:
        """A consumer's Fetch request (no replica id) for ``offset``."""
        return self.send(self.cluster.broker_name(broker), "fetch", {
            "topic": topic, "partition": partition, "fetch_offset": offset,
            "max_wait_ms": max_wait_ms, "max_records": max_records,
            "isolation": "read_uncommitted",
        })

    def commit(self, group: str, member: str, generation: int,
               offsets: list[tuple[str, int, int]]) -> int:
        """An OffsetCommit request to the group coordinator."""
        return self.send("coordinator", "offset_commit", {
            "group": group, "generation": generation, "member": member, "offsets": offsets,
        })

    def wait(self, correlation: int, timeout_ms: int = 60_000) -> dict | None:
        """Run the world until the response arrives (its body) or ``timeout_ms`` passes (None)."""
        self.world.run(until_ms=self.world.now_ms + timeout_ms,
                       until=lambda: correlation in self.responses)
        entry = self.responses.get(correlation)
        return None if entry is None else entry[1]

    def arrived_ms(self, correlation: int) -> int:
        """When the response to ``correlation`` arrived."""
        return self.responses[correlation][0]
