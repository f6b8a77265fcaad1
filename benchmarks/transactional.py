"""The transactional scenario that group 2 times, built from course_lib's public API.

Claim 11's story at any size: a producer application sends its messages in
transactions of ten, crashes just before one commit, and restarts;
init_transactions aborts the transaction it left open and the application
resends from the first batch whose commit it never saw. A read_committed
consumer then processes the topic (process-then-commit), and the checker
reads the history. Everything a learner waits for is inside the timing.
"""

from __future__ import annotations

from dataclasses import dataclass

from course_lib import scenarios
from course_lib.checker import check
from course_lib.cluster import Cluster
from course_lib.faults import Crash, CrashClient, FaultPlan

BATCH = 10


@dataclass(frozen=True)
class TransactionalRun:
    """What one run did: its size, the World's events, restarts and the verdict."""

    messages: int
    events: int
    producer_restarts: int
    aborted_transactions: int
    delivered: int
    lost: int
    duplicated: int
    guarantee: str


def _send_in_transactions(cluster: Cluster, values: list[str]) -> int:
    batches = [values[i:i + BATCH] for i in range(0, len(values), BATCH)]
    done = restarts = 0
    while done < len(batches):
        producer = cluster.process("txn-app").producer({"transactional.id": "bench"})
        try:
            producer.init_transactions()
            for batch in batches[done:]:
                producer.begin_transaction()
                for value in batch:
                    producer.produce(scenarios.TOPIC, value)
                producer.commit_transaction()
                done += 1
        except Crash:
            restarts += 1
    return restarts


def run_transactional(messages: int, seed: int = 0) -> TransactionalRun:
    """Send ``messages`` in transactions with one crash, consume read_committed, check."""
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic(scenarios.TOPIC, {"min.insync.replicas": 2})
    crash_at = max(1, messages // (2 * BATCH))
    cluster.install_faults(FaultPlan((CrashClient("producer.commit_transaction", "before",
                                                  crash_at),)))
    restarts = _send_in_transactions(cluster, scenarios.message_values(messages))
    scenarios.consume_with_restarts(cluster, scenarios.at_least_once,
                                    {"enable.auto.commit": False,
                                     "isolation.level": "read_committed"})
    report = check(cluster.history)
    aborted = sum(1 for e in cluster.history
                  if e.kind == "txn_end" and e.data["outcome"] == "abort")
    return TransactionalRun(messages, cluster.world.events_run, restarts, aborted,
                            report.delivered, len(report.lost), len(report.duplicated),
                            report.guarantee)
