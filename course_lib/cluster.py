"""The cluster: brokers, topics, the controller's elections, and client factories.

``Cluster(brokers=3, seed=7)`` is the entry point of every scenario. It owns the
World, the network, the brokers, the group coordinator and the fault injector,
and it plays the controller: it keeps each partition's leader, leader epoch and
ISR, elects a new leader when one dies (cleanly from the ISR, or uncleanly from
any live replica when ``unclean.leader.election.enable`` allows it), and leaves
the partition offline when it can do neither.

Simplifications, all stated in the notebooks: the controller is always up and
learns of a broker crash at once (real KRaft waits ``broker.session.timeout.ms``);
metadata reaches clients instantly; replica ``p`` of a topic lives on brokers
``p, p+1, …`` modulo the broker count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from course_lib.broker import Broker
from course_lib.client import AppProcess
from course_lib.config import Config, broker_config, topic_config
from course_lib.coordinator import Coordinator, TransactionCoordinator
from course_lib.faults import FaultInjector, FaultPlan
from course_lib.log import PartitionLog
from course_lib.network import Network
from course_lib.sim import World


@dataclass
class PartitionState:
    """The controller's view of one partition: replicas, leader, epoch, ISR."""

    topic: str
    partition: int
    replicas: list[int]
    config: Config
    leader: int | None = None
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)


class Cluster:
    """A simulated Kafka cluster in its own World."""

    def __init__(self, brokers: int = 3, seed: int = 0, *,
                 config: Mapping[str, object] | None = None,
                 faults: FaultPlan | None = None, world: World | None = None) -> None:
        if isinstance(brokers, bool) or not isinstance(brokers, int) or brokers < 1:
            raise ValueError(f"brokers must be a positive int, not {brokers!r}")
        self.world = world if world is not None else World(seed)
        self.broker_config = broker_config(config)
        self.network = Network(self.world, self.broker_config["network.latency.ms"])
        self.brokers = [Broker(self, i) for i in range(brokers)]
        for broker in self.brokers:
            self.network.register(broker)
        self.coordinator = Coordinator(self)
        self.transactions = TransactionCoordinator(self)
        self.network.register(self.coordinator)
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self._names: dict[str, int] = {}
        self._next_producer_id = 1000
        self.faults = FaultInjector(self, faults or FaultPlan())

    def __repr__(self) -> str:
        return f"Cluster(brokers={len(self.brokers)}, seed={self.world.seed!r})"

    @property
    def history(self):
        """The World's history: everything the cluster and its clients did."""
        return self.world.history

    # ----- topics and metadata ------------------------------------------------

    def create_topic(self, name: str, config: Mapping[str, object] | None = None) -> None:
        """Create a topic; its settings are validated against the broker count."""
        if any(topic == name for topic, _ in self.partitions):
            raise ValueError(f"topic {name!r} already exists")
        settings = topic_config(config, len(self.brokers))
        count = len(self.brokers)
        for p in range(settings["num.partitions"]):
            replicas = [(p + i) % count for i in range(settings["replication.factor"])]
            tp = (name, p)
            meta = PartitionState(name, p, replicas, settings, isr=list(replicas))
            self.partitions[tp] = meta
            for r in replicas:
                self.brokers[r].logs[tp] = PartitionLog()
            self._elect(tp, reason="topic created")

    def partition(self, tp: tuple[str, int]) -> PartitionState:
        """The controller's state for ``(topic, partition)``."""
        try:
            return self.partitions[tp]
        except KeyError:
            raise KeyError(f"unknown topic-partition {tp!r}; create the topic first") from None

    def partitions_of(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``."""
        found = sorted(p for t, p in self.partitions if t == topic)
        if not found:
            raise KeyError(f"unknown topic {topic!r}; create it with cluster.create_topic")
        return found

    def leader(self, topic: str, partition: int = 0) -> int | None:
        """The current leader's broker id, or None while the partition is offline."""
        return self.partition((topic, partition)).leader

    def broker_name(self, broker_id: int) -> str:
        """The network name of a broker."""
        return self.brokers[broker_id].name

    def visible_end(self, tp: tuple[str, int], log: PartitionLog, isolation: str | None) -> int:
        """How far a consumer may read: the HW, or the last stable offset for read_committed."""
        return log.visible_end(isolation)

    def readable(self, topic: str, partition: int = 0,
                 isolation: str = "read_uncommitted") -> list[bytes | None] | None:
        """Values a fresh consumer with ``isolation`` could read now; None while offline."""
        meta = self.partition((topic, partition))
        if meta.leader is None:
            return None
        return self.brokers[meta.leader].logs[(topic, partition)].values(isolation=isolation)

    # ----- controller ----------------------------------------------------------

    def alter_isr(self, tp: tuple[str, int], isr: list[int], reason: str) -> None:
        """Change the ISR (the leader asks when a follower lags or catches up)."""
        meta = self.partition(tp)
        ordered = [r for r in meta.replicas if r in isr]
        if ordered == meta.isr:
            return
        meta.isr = ordered
        self.history.record("isr", "controller", topic=tp[0], partition=tp[1], isr=ordered,
                            reason=reason)
        if meta.leader is not None:
            self.brokers[meta.leader]._advance_high_watermark(tp)

    def _elect(self, tp: tuple[str, int], reason: str) -> None:
        meta = self.partition(tp)
        live = [r for r in meta.replicas if self.brokers[r].alive]
        candidates = [r for r in live if r in meta.isr]
        unclean = False
        if not candidates and meta.config["unclean.leader.election.enable"] and live:
            candidates, unclean = live, True
        if not candidates:
            if meta.leader is not None:
                self.history.record("offline", "controller", topic=tp[0], partition=tp[1],
                                    isr=list(meta.isr), reason=reason)
            meta.leader = None
            return
        meta.leader = candidates[0]
        meta.leader_epoch += 1
        if unclean:
            meta.isr = [meta.leader]
        self.history.record("election", "controller", topic=tp[0], partition=tp[1],
                            leader=meta.leader, epoch=meta.leader_epoch, isr=list(meta.isr),
                            unclean=unclean, reason=reason)
        self.brokers[meta.leader].become_leader(tp, meta.leader_epoch, meta.isr)
        for r in live:
            if r != meta.leader:
                self.brokers[r].become_follower(tp)

    def kill_broker(self, broker_id: int, lose_disk: bool = False) -> None:
        """Crash a broker now; with ``lose_disk`` its logs are gone when it returns."""
        broker = self.brokers[broker_id]
        if not broker.alive:
            return
        broker.crash(lose_disk)
        self.history.record("broker_crash", broker.name, lose_disk=lose_disk)
        for tp, meta in self.partitions.items():
            if broker_id not in meta.replicas:
                continue
            if broker_id in meta.isr and len(meta.isr) > 1:
                self.alter_isr(tp, [r for r in meta.isr if r != broker_id],
                               reason=f"broker {broker_id} crashed")
            if meta.leader == broker_id:
                self._elect(tp, reason=f"leader {broker_id} crashed")

    def restart_broker(self, broker_id: int) -> None:
        """Start a crashed broker; it rejoins as follower, or leads an offline partition."""
        broker = self.brokers[broker_id]
        if broker.alive:
            return
        broker.start()
        self.history.record("broker_restart", broker.name)
        for tp, meta in self.partitions.items():
            if broker_id not in meta.replicas:
                continue
            if meta.leader is None:
                self._elect(tp, reason=f"broker {broker_id} returned")
            if meta.leader != broker_id:
                broker.become_follower(tp)

    def install_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan, e.g. after setting the stage without faults.

        Call counts start again at zero, so ``CrashClient(point, nth=1)`` means
        the first such call *after* this point, not one made while seeding data.
        """
        self.faults.detach()
        self.faults = FaultInjector(self, plan)

    def settle(self, duration_ms: int = 5_000) -> None:
        """Let replication catch up for a while with no client activity."""
        self.world.advance(duration_ms)

    # ----- clients ----------------------------------------------------------------

    def unique_name(self, base: str) -> str:
        """``producer-1``, ``producer-2``…: stable names for histories and diagrams."""
        self._names[base] = self._names.get(base, 0) + 1
        return f"{base}-{self._names[base]}"

    def allocate_producer_id(self) -> int:
        """A fresh producer id, as InitProducerId hands out."""
        self._next_producer_id += 1
        return self._next_producer_id

    def process(self, name: str = "app") -> AppProcess:
        """A simulated OS process for clients: a crash in it kills all of them."""
        return AppProcess(self, self.unique_name(name))

    def producer(self, config: Mapping[str, object] | None = None):
        """A producer in a process of its own (see :meth:`process` to share one)."""
        return self.process("producer-app").producer(config)

    def consumer(self, config: Mapping[str, object] | None = None):
        """A consumer in a process of its own (see :meth:`process` to share one)."""
        return self.process("consumer-app").consumer(config)
