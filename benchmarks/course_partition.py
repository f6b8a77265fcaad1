"""Group 1, course_lib side: N producers writing to a 3-replica partition over a lossy link.

This is the real thing a notebook runs: a ``Cluster`` of three brokers, a
topic with replication factor 3 and ``min.insync.replicas=2``, and N
``Producer`` clients with ``acks=all``. The link between producers and the
leader drops a seeded fraction of produce requests and responses (a message
filter on the cluster's network, the hook the fault injector itself uses), so
producers time out and retry, and the idempotent producer's retries are
deduplicated by the broker.

The producer settings make the workload message-by-message, like the SimPy
model it is compared with: ``batch.size=1`` puts each record in a batch of
its own, one request in flight per producer, and short timeouts so a lost
request costs 100 virtual ms rather than 30 virtual seconds (virtual time is
free, but the default ``delivery.timeout.ms`` would expire queued records).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from course_lib.cluster import Cluster

TOPIC = "bench"
PRODUCER_CONFIG = MappingProxyType({
    "acks": "all",
    "linger.ms": 0,
    "batch.size": 1,
    "max.in.flight.requests.per.connection": 1,
    "request.timeout.ms": 100,
    "retry.backoff.ms": 100,
    "delivery.timeout.ms": 1_000_000_000,
})


@dataclass(frozen=True)
class PartitionRun:
    """What one run did: events the World ran, records acked and failed, messages dropped."""

    events: int
    acked: int
    failed: int
    dropped: int
    virtual_ms: int


def lossy_filter(cluster: Cluster, loss_fraction: float):
    """A network filter dropping ``loss_fraction`` of produce messages, from a seeded stream.

    Returns the filter and a one-item list counting the drops (the filter is a
    closure, so the count lives next to it rather than in a global).
    """
    rng = cluster.world.rng("lossy-link")
    dropped = [0]

    def drop_some(envelope) -> tuple[int, int]:
        if envelope.api == "produce" and rng.random() < loss_fraction:
            dropped[0] += 1
            return 0, 0
        return 1, 0

    return drop_some, dropped


def run_course_lib(producers: int, messages_per_producer: int, loss_fraction: float,
                   seed: int = 0) -> PartitionRun:
    """Build the cluster, produce every record, flush every producer; count what happened."""
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic(TOPIC, {"replication.factor": 3, "min.insync.replicas": 2})
    drop_some, dropped = lossy_filter(cluster, loss_fraction)
    cluster.network.filters.append(drop_some)
    outcomes = {"acked": 0, "failed": 0}

    def on_delivery(error, _message) -> None:
        outcomes["acked" if error is None else "failed"] += 1

    clients = [cluster.producer(PRODUCER_CONFIG) for _ in range(producers)]
    for index, producer in enumerate(clients):
        for sequence in range(messages_per_producer):
            producer.produce(TOPIC, f"p{index}-{sequence}", on_delivery=on_delivery)
    for producer in clients:
        producer.flush()
    return PartitionRun(cluster.world.events_run, outcomes["acked"], outcomes["failed"],
                        dropped[0], cluster.world.now_ms)
