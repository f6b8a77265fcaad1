"""Brokers: partition replicas, the leader's produce and fetch handling, follower fetch.

One :class:`Broker` holds a :class:`~course_lib.log.PartitionLog` per replica it
hosts. As leader of a partition it appends produce requests, answers consumer
fetches up to the high watermark, tracks how far each follower has fetched,
advances the high watermark to the lowest log end offset in the ISR, and asks
the controller to shrink the ISR when a follower lags for longer than
``replica.lag.time.max.ms``. As follower it fetches from the leader in a loop,
truncating first wherever its history diverges from the leader's (KIP-101).

Simplifications, all stated in the notebooks: one request carries one batch
for one partition; the controller (``Cluster``) is always available and learns
of a crash at once; a fetch that finds nothing waits at the leader for up to
``replica.fetch.wait.max.ms`` (or the consumer's ``fetch.max.wait.ms``).

Known difference from Kafka 3.7+: the high watermark still advances while the
ISR is smaller than ``min.insync.replicas``, as it did before KAFKA-15583
("strict min ISR", KIP-966). Current Kafka freezes it instead, so there an
acks=all write whose ISR shrinks after the append times out rather than
failing with NOT_ENOUGH_REPLICAS_AFTER_APPEND, and acks=0/1 writes stay
invisible to consumers until the ISR grows back.
"""

from __future__ import annotations

from course_lib.errors import KafkaError
from course_lib.log import PartitionLog, Record

REPLICA_FETCH_BACKOFF_MS = 1_000  # replica.fetch.backoff.ms: pause when there is no leader
REPLICA_SOCKET_TIMEOUT_MS = 30_000  # replica.socket.timeout.ms: give up on a lost fetch


class LeaderState:
    """What a leader tracks for one partition during one leader epoch."""

    __slots__ = ("epoch", "follower_leo", "caught_up_ms", "pending", "parked")

    def __init__(self, epoch: int, followers: list[int], now_ms: int) -> None:
        self.epoch = epoch
        self.follower_leo = {f: 0 for f in followers}
        self.caught_up_ms = {f: now_ms for f in followers}
        self.pending: list[tuple[int, object, dict]] = []  # (required offset, envelope, timer)
        self.parked: list[tuple[object, object]] = []  # (envelope, timer)


class Broker:
    """One Kafka broker: its replicas, its network identity, and its handlers."""

    def __init__(self, cluster, broker_id: int) -> None:
        self.cluster = cluster
        self.world = cluster.world
        self.id = broker_id
        self.name = f"broker-{broker_id}"
        self.alive = True
        self.incarnation = 0
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self.leading: dict[tuple[str, int], LeaderState] = {}
        self._fetch_token: dict[tuple[str, int], int] = {}
        self._awaiting: dict[int, tuple[tuple[str, int], int]] = {}

    def __repr__(self) -> str:
        return f"<Broker {self.id} {'up' if self.alive else 'down'}>"

    # ----- lifecycle -------------------------------------------------------

    def crash(self, lose_disk: bool) -> None:
        """Stop at once: pending work is lost; the disk survives unless ``lose_disk``."""
        self.alive = False
        self.incarnation += 1
        self.leading.clear()
        self._fetch_token.clear()
        self._awaiting.clear()
        if lose_disk:
            self.logs = {tp: PartitionLog() for tp in self.logs}

    def start(self) -> None:
        """Come back up as a new incarnation; the controller then assigns roles."""
        self.alive = True
        self.incarnation += 1

    def _later(self, delay_ms: int, callback, *args):
        incarnation = self.incarnation

        def guarded() -> None:
            if self.alive and self.incarnation == incarnation:
                callback(*args)

        return self.world.call_later(delay_ms, guarded)

    # ----- roles (called by the controller) ----------------------------------

    def become_leader(self, tp: tuple[str, int], epoch: int, isr: list[int]) -> None:
        """Lead ``tp`` from now on in ``epoch``; the epoch starts at our log end."""
        log = self.logs[tp]
        log.start_epoch(epoch)
        followers = [r for r in self.cluster.partition(tp).replicas if r != self.id]
        self._fail_pending(tp)
        self.leading[tp] = LeaderState(epoch, followers, self.world.now_ms)
        self._fetch_token.pop(tp, None)
        lag_ms = self.cluster.broker_config["replica.lag.time.max.ms"]
        self._later(lag_ms // 2, self._check_isr, tp, epoch)
        self._advance_high_watermark(tp)

    def become_follower(self, tp: tuple[str, int]) -> None:
        """Follow the current leader of ``tp``: start (or restart) the fetch loop."""
        self._fail_pending(tp)
        self.leading.pop(tp, None)
        token = self._fetch_token.get(tp, 0) + 1
        self._fetch_token[tp] = token
        self._later(0, self._fetch, tp, token)

    def _fail_pending(self, tp: tuple[str, int]) -> None:
        state = self.leading.get(tp)
        if state is None:
            return
        for _required, envelope, timer in state.pending:
            timer.cancel()
            self._reply_error(envelope, KafkaError.NOT_LEADER_FOR_PARTITION)
        for envelope, timer in state.parked:
            timer.cancel()
            self._reply(envelope, {"error": KafkaError.NOT_LEADER_FOR_PARTITION})
        state.pending.clear()
        state.parked.clear()

    # ----- messages -----------------------------------------------------------

    def receive(self, envelope) -> None:
        """Dispatch a request, or a response to our own follower fetch."""
        if envelope.kind == "response":
            self._on_fetch_response(envelope)
        elif envelope.api == "produce":
            self._on_produce(envelope)
        elif envelope.api == "fetch":
            self._on_fetch(envelope)

    def _reply(self, envelope, body: dict) -> None:
        self.cluster.network.send(self, envelope.src, envelope.api, "response", body,
                                  envelope.correlation_id)

    def _reply_error(self, envelope, code: int) -> None:
        self._reply(envelope, {"error": code})

    # ----- produce ---------------------------------------------------------------

    def _on_produce(self, envelope) -> None:
        body = envelope.body
        tp = (body["topic"], body["partition"])
        state = self.leading.get(tp)
        if state is None:
            self._reply_error(envelope, KafkaError.NOT_LEADER_FOR_PARTITION)
            return
        meta = self.cluster.partition(tp)
        acks = body["acks"]
        if acks == "all" and len(meta.isr) < meta.config["min.insync.replicas"]:
            self._reply_error(envelope, KafkaError.NOT_ENOUGH_REPLICAS)
            return
        log = self.logs[tp]
        pid = body.get("producer_id", -1)
        if pid >= 0:
            status, offset = log.check_sequence(pid, body["producer_epoch"], body["base_seq"],
                                                len(body["records"]))
            if status == "duplicate":
                self.world.history.record("dedupe", self.name, topic=tp[0], partition=tp[1],
                                          offset=offset, producer_id=pid,
                                          seq=body["base_seq"])
                # A retried batch is answered as its original append would be: with
                # acks=all only once the high watermark covers it. Kafka hands the
                # duplicate's offsets to the same DelayedProduce as a fresh append
                # (UnifiedLog.append returns them, ReplicaManager waits for
                # lastOffset + 1); acking it at once would confirm a write that the
                # ISR may not have, and a failover could then lose it.
                if acks == "1":
                    self._reply(envelope, {"error": None, "base_offset": offset})
                elif acks == "all":
                    self._await_replication(tp, offset + len(body["records"]), envelope)
                return
            if status != "ok":
                code = (KafkaError.INVALID_PRODUCER_EPOCH if status == "fenced"
                        else KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER)
                self._reply_error(envelope, code)
                return
        base = log.log_end_offset
        for index, (key, value) in enumerate(body["records"]):
            seq = body["base_seq"] + index if pid >= 0 else -1
            log.append(Record(base + index, key, value, state.epoch, self.world.now_ms,
                              pid, body.get("producer_epoch", -1), seq,
                              body["base_seq"] if pid >= 0 else -1,
                              transactional=body.get("transactional", False)))
            self.world.history.record("append", self.name, topic=tp[0], partition=tp[1],
                                      offset=base + index, value=value, epoch=state.epoch)
        if acks == "1":
            self._reply(envelope, {"error": None, "base_offset": base})
        self._advance_high_watermark(tp)
        if acks == "all":
            self._await_replication(tp, log.log_end_offset, envelope)
        self._wake_parked(tp)

    def _await_replication(self, tp: tuple[str, int], required: int, envelope) -> None:
        """Answer an acks=all produce once the high watermark reaches ``required``."""
        timer = self._later(envelope.body["timeout_ms"], self._expire_pending, tp, envelope)
        self.leading[tp].pending.append((required, envelope, timer))
        self._complete_pending(tp)

    def _expire_pending(self, tp: tuple[str, int], envelope) -> None:
        state = self.leading.get(tp)
        if state is None:
            return
        for item in state.pending:
            if item[1] is envelope:
                state.pending.remove(item)
                self._reply_error(envelope, KafkaError.REQUEST_TIMED_OUT)
                return

    def _advance_high_watermark(self, tp: tuple[str, int]) -> None:
        state = self.leading.get(tp)
        if state is None:
            return
        log = self.logs[tp]
        meta = self.cluster.partition(tp)
        lowest = min([log.log_end_offset] + [state.follower_leo.get(r, 0)
                                             for r in meta.isr if r != self.id])
        if lowest > log.high_watermark:
            log.high_watermark = lowest
            self._complete_pending(tp)
            self._wake_parked(tp)

    def _complete_pending(self, tp: tuple[str, int]) -> None:
        state = self.leading[tp]
        log = self.logs[tp]
        meta = self.cluster.partition(tp)
        still = []
        for required, envelope, timer in state.pending:
            if log.high_watermark >= required:
                timer.cancel()
                if len(meta.isr) < meta.config["min.insync.replicas"]:
                    self._reply_error(envelope, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND)
                else:
                    self._reply(envelope, {"error": None,
                                           "base_offset": required - len(
                                               envelope.body["records"])})
            else:
                still.append((required, envelope, timer))
        state.pending = still

    # ----- fetch (leader side) ---------------------------------------------------

    def _on_fetch(self, envelope) -> None:
        body = envelope.body
        tp = (body["topic"], body["partition"])
        state = self.leading.get(tp)
        if state is None:
            self._reply_error(envelope, KafkaError.NOT_LEADER_FOR_PARTITION)
            return
        log = self.logs[tp]
        replica = body.get("replica_id", -1)
        if replica >= 0:
            last_epoch = body["last_epoch"]
            if last_epoch >= 0:
                found, end = log.end_offset_for_epoch(last_epoch)
                if found < last_epoch or end < body["fetch_offset"]:
                    self._reply(envelope, {"error": None, "diverging": (found, end)})
                    return
            self._track_follower(tp, replica, body["fetch_offset"])
        elif not 0 <= body["fetch_offset"] <= log.log_end_offset:
            self._reply_error(envelope, KafkaError.OFFSET_OUT_OF_RANGE)
            return
        if not self._answer_fetch(tp, envelope):
            wait_ms = body["max_wait_ms"]
            timer = self._later(wait_ms, self._expire_parked, tp, envelope)
            state.parked.append((envelope, timer))

    def _visible_end(self, tp: tuple[str, int], envelope) -> int:
        log = self.logs[tp]
        if envelope.body.get("replica_id", -1) >= 0:
            return log.log_end_offset
        return self.cluster.visible_end(tp, log, envelope.body.get("isolation"))

    def _answer_fetch(self, tp: tuple[str, int], envelope, force: bool = False) -> bool:
        log = self.logs[tp]
        start = envelope.body["fetch_offset"]
        end = self._visible_end(tp, envelope)
        if start >= end and not force:
            return False
        records = log.read(start, end, envelope.body["max_records"]) if start < end else []
        if envelope.body.get("isolation") == "read_committed":
            records = [r for r in records if not log.is_aborted(r)]
        self._reply(envelope, {"error": None, "records": records,
                               "high_watermark": log.high_watermark,
                               "leader_epoch": self.leading[tp].epoch})
        return True

    def append_marker(self, tp: tuple[str, int], producer_id: int, producer_epoch: int,
                      control: str) -> bool:
        """Write a COMMIT/ABORT control record for a transaction, as its leader.

        The marker carries the coordinator's epoch for the producer, so after a
        fencing abort every batch of the older instance is refused here.
        Returns False when this broker does not lead ``tp`` (the coordinator retries).
        """
        state = self.leading.get(tp)
        if state is None:
            return False
        log = self.logs[tp]
        offset = log.log_end_offset
        log.append(Record(offset, None, None, state.epoch, self.world.now_ms, producer_id,
                          producer_epoch, control=control, transactional=True))
        self.world.history.record("marker", self.name, topic=tp[0], partition=tp[1],
                                  offset=offset, control=control, producer_id=producer_id)
        self._advance_high_watermark(tp)
        self._wake_parked(tp)
        return True

    def _expire_parked(self, tp: tuple[str, int], envelope) -> None:
        state = self.leading.get(tp)
        if state is None:
            return
        for item in state.parked:
            if item[0] is envelope:
                state.parked.remove(item)
                self._answer_fetch(tp, envelope, force=True)
                return

    def _wake_parked(self, tp: tuple[str, int]) -> None:
        state = self.leading.get(tp)
        if state is None or not state.parked:
            return
        still = []
        for envelope, timer in state.parked:
            if self._answer_fetch(tp, envelope):
                timer.cancel()
            else:
                still.append((envelope, timer))
        state.parked = still

    def _track_follower(self, tp: tuple[str, int], replica: int, fetch_offset: int) -> None:
        state = self.leading[tp]
        log = self.logs[tp]
        state.follower_leo[replica] = fetch_offset
        if fetch_offset >= log.log_end_offset:
            state.caught_up_ms[replica] = self.world.now_ms
        meta = self.cluster.partition(tp)
        epoch_start = log.epochs[-1][1] if log.epochs else 0
        if (replica not in meta.isr and fetch_offset >= log.high_watermark
                and fetch_offset >= epoch_start and self.cluster.brokers[replica].alive):
            self.cluster.alter_isr(tp, meta.isr + [replica], reason=f"broker {replica} caught up")
        self._advance_high_watermark(tp)

    def _check_isr(self, tp: tuple[str, int], epoch: int) -> None:
        state = self.leading.get(tp)
        if state is None or state.epoch != epoch:
            return
        lag_ms = self.cluster.broker_config["replica.lag.time.max.ms"]
        meta = self.cluster.partition(tp)
        # Kafka's rule: out of sync when not caught up to the log end within the lag
        # time, whether the follower is slow, stuck, or not fetching at all.
        laggards = [r for r in meta.isr if r != self.id
                    and self.world.now_ms - state.caught_up_ms.get(r, 0) > lag_ms]
        if laggards:
            self.cluster.alter_isr(tp, [r for r in meta.isr if r not in laggards],
                                   reason=f"broker(s) {laggards} lagged > {lag_ms} ms")
            self._advance_high_watermark(tp)
        self._later(lag_ms // 2, self._check_isr, tp, epoch)

    # ----- fetch (follower side) -----------------------------------------------

    def _fetch(self, tp: tuple[str, int], token: int) -> None:
        if self._fetch_token.get(tp) != token:
            return
        leader = self.cluster.partition(tp).leader
        if leader is None or leader == self.id:
            self._later(REPLICA_FETCH_BACKOFF_MS, self._fetch, tp, token)
            return
        log = self.logs[tp]
        correlation = self.cluster.network.next_correlation_id()
        self._awaiting[correlation] = (tp, token)
        self.cluster.network.send(self, self.cluster.broker_name(leader), "fetch", "request", {
            "topic": tp[0], "partition": tp[1], "replica_id": self.id,
            "fetch_offset": log.log_end_offset, "last_epoch": log.last_epoch,
            "max_wait_ms": self.cluster.broker_config["replica.fetch.wait.max.ms"],
            "max_records": 1_000,
        }, correlation)
        self._later(REPLICA_SOCKET_TIMEOUT_MS, self._fetch_timed_out, correlation)

    def _fetch_timed_out(self, correlation: int) -> None:
        entry = self._awaiting.pop(correlation, None)
        if entry is not None:
            self._fetch(*entry)

    def _on_fetch_response(self, envelope) -> None:
        entry = self._awaiting.pop(envelope.correlation_id, None)
        if entry is None:
            return
        tp, token = entry
        if self._fetch_token.get(tp) != token:
            return
        body = envelope.body
        log = self.logs[tp]
        if body["error"] is not None:
            self._later(REPLICA_FETCH_BACKOFF_MS, self._fetch, tp, token)
            return
        if "diverging" in body:
            epoch, end = body["diverging"]
            own_end = log.end_offset_for_epoch(epoch)[1] if epoch >= 0 else 0
            self._truncate(tp, min(end, own_end))
            self._later(0, self._fetch, tp, token)
            return
        for record in body["records"]:
            if record.offset == log.log_end_offset:
                log.append(record)
        log.high_watermark = max(log.high_watermark,
                                 min(body["high_watermark"], log.log_end_offset))
        self._fetch(tp, token)

    def _truncate(self, tp: tuple[str, int], offset: int) -> None:
        dropped = self.logs[tp].truncate(offset)
        if dropped:
            self.world.history.record(
                "truncate", self.name, topic=tp[0], partition=tp[1], offset=offset,
                values=[r.value for r in dropped if r.control is None])
