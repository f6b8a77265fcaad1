"""The checker: reads a History and names what went wrong with each message.

It never looks at the cluster, only at what the History recorded, so the
system cannot grade itself. Messages are identified by their value (every
scenario gives each message a unique value), as Jepsen's Kafka checker does.

Anomalies (named after Jepsen/Maelstrom):

* **lost** — the application sent it (or it was acknowledged), but it was never
  delivered: not processed by the consumer, or, for producer-side scenarios,
  not in the final readable log. ``lost_acked`` is the worse subset: the
  producer was told the write succeeded.
* **duplicate** — delivered more than once (processed twice, or the same value
  at two offsets of the log).
* **reordered** — delivered in a different order than one producer sent it to
  one partition (counted as the messages outside the longest in-order run;
  "one producer" is the actor of a value's first ``send``: two producers
  writing side by side promise nothing about each other's order).
* **inconsistent offsets** — one offset acknowledged for two different values,
  which is what an unclean leader election does to a partition.
* **aborted read** (G1a) — delivered, although every send of it belonged to a
  transaction that aborted (or never committed): an effect of a write that,
  logically, never happened. It spoils at-most-once and exactly-once, like a
  duplicate. Such values are not expected to be delivered, so never "lost".
* **unacked write** — the producer was told the write failed (or never heard,
  because its process died waiting), yet it is in the log: the indefinite
  outcome made visible.

The guarantee achieved follows: no loss and no duplicate is exactly-once; no
loss is at-least-once; no duplicate is at-most-once; otherwise none.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

GUARANTEES = ("exactly-once", "at-least-once", "at-most-once", "none")


@dataclass
class Report:
    """Counts, anomalies and the guarantee achieved by one run."""

    sent: int
    acked: int
    delivered: int
    lost: list = field(default_factory=list)
    lost_acked: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    reordered: list = field(default_factory=list)
    unacked_writes: list = field(default_factory=list)
    inconsistent_offsets: list = field(default_factory=list)
    aborted_reads: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    explanations: dict = field(default_factory=dict)

    @property
    def guarantee(self) -> str:
        """The strongest delivery guarantee this run is consistent with."""
        extra = self.duplicated or self.aborted_reads
        if not self.lost and not extra:
            return "exactly-once"
        if not self.lost:
            return "at-least-once"
        if not extra:
            return "at-most-once"
        return "none"

    def summary(self) -> str:
        """One line: the counts a reader looks at first."""
        return (f"sent {self.sent}, acked {self.acked}, delivered {self.delivered}: "
                f"lost {len(self.lost)} (acked {len(self.lost_acked)}), "
                f"duplicated {len(self.duplicated)}, reordered {len(self.reordered)}, "
                f"unacked writes {len(self.unacked_writes)}"
                + (f", aborted reads {len(self.aborted_reads)}" if self.aborted_reads else "")
                + f" -> {self.guarantee}")

    def as_dict(self) -> dict:
        """Plain data for tables, widgets and JSON."""
        return {"sent": self.sent, "acked": self.acked, "delivered": self.delivered,
                "lost": len(self.lost), "lost_acked": len(self.lost_acked),
                "duplicated": len(self.duplicated), "reordered": len(self.reordered),
                "unacked_writes": len(self.unacked_writes),
                "inconsistent_offsets": len(self.inconsistent_offsets),
                "aborted_reads": len(self.aborted_reads), "errors": dict(self.errors),
                "guarantee": self.guarantee}


def check(history, delivered_by: str = "process") -> Report:
    """Read ``history`` and report anomalies.

    ``delivered_by`` says what counts as delivery: ``"process"`` (the consumer's
    side effects) or ``"log"`` (the values of the last ``final_read`` event,
    for scenarios that test the durability of publishing alone).
    """
    if delivered_by not in ("process", "log"):
        raise ValueError(f"delivered_by must be 'process' or 'log', not {delivered_by!r}")
    sent_order: dict = {}
    sender: dict = {}
    for event in history:
        value = event.data.get("value")
        if event.kind == "send" and value not in sent_order:
            sent_order[value] = len(sent_order)
            sender[value] = event.actor
    aborted = aborted_values(history)
    for value in aborted:
        sent_order.pop(value, None)
    acked = {e.data["value"] for e in history if e.kind == "ack"} - aborted
    log_view = _final_log(history)
    if delivered_by == "process":
        delivered = [(e.data["topic"], e.data["partition"], e.data["value"]) for e in history
                     if e.kind == "process"]
    else:
        delivered = log_view
    counts = Counter(value for _t, _p, value in delivered)
    read_log = any(e.kind == "final_read" for e in history)
    in_log = {value for _t, _p, value in log_view} if read_log else set(counts)
    report = Report(sent=len(sent_order), acked=len(acked), delivered=len(counts))
    report.lost = sorted((v for v in sent_order if v not in counts), key=sent_order.get)
    report.lost_acked = [v for v in report.lost if v in acked]
    report.duplicated = sorted((v for v, n in counts.items() if n > 1 and v not in aborted),
                               key=lambda v: sent_order.get(v, 0))
    report.aborted_reads = sorted(v for v in counts if v in aborted)
    report.reordered = _reordered(delivered, sent_order, sender)
    # Told it failed (nack) or never told because the producer died waiting
    # (lost_buffer), yet written. A live producer that has not polled yet is neither.
    unanswered = {e.data["value"] for e in history if e.kind == "nack"}
    unanswered |= {v for e in history if e.kind == "lost_buffer" for v in e.data["values"]}
    report.unacked_writes = sorted((v for v in unanswered - acked if v in in_log),
                                   key=lambda v: sent_order.get(v, len(sent_order)))
    report.inconsistent_offsets = _inconsistent_offsets(history)
    report.errors = dict(Counter(e.data["error"] for e in history
                                 if e.kind in ("nack", "retry")))
    for value in (report.lost + report.duplicated + report.reordered + report.unacked_writes
                  + report.aborted_reads):
        report.explanations.setdefault(value, explain(history, value))
    return report


def aborted_values(history) -> set:
    """Values whose every send was inside a transaction that did not commit."""
    outcome = {e.data["txn"]: e.data["outcome"] for e in history if e.kind == "txn_end"}
    transactional, committed = set(), set()
    for event in history:
        if event.kind != "send":
            continue
        txn = event.data.get("txn")
        if txn is None or outcome.get(txn) == "commit":
            committed.add(event.data["value"])
        else:
            transactional.add(event.data["value"])
    return transactional - committed


def _inconsistent_offsets(history) -> list[tuple[str, int, int]]:
    """Offsets acknowledged for two different values (an unclean election reuses them)."""
    owners: dict[tuple[str, int, int], set] = {}
    for event in history:
        offset = event.data.get("offset") if event.kind == "ack" else None
        if offset is not None and offset >= 0:  # acks=0 has no offset (OFFSET_INVALID)
            where = (event.data["topic"], event.data["partition"], event.data["offset"])
            owners.setdefault(where, set()).add(event.data["value"])
    return sorted(where for where, values in owners.items() if len(values) > 1)


def _final_log(history) -> list[tuple[str, int, bytes]]:
    """(topic, partition, value) of the last ``final_read`` of each partition."""
    latest: dict[tuple[str, int], list] = {}
    for event in history:
        if event.kind == "final_read":
            latest[(event.data["topic"], event.data["partition"])] = event.data["values"] or []
    return [(t, p, value) for (t, p), values in sorted(latest.items()) for value in values]


def _reordered(delivered: list[tuple[str, int, bytes]], sent_order: dict,
               sender: dict) -> list:
    """Messages outside the longest run delivered in send order, per partition and producer."""
    out_of_order = []
    by_stream: dict[tuple, list] = {}
    seen = set()
    for topic, partition, value in delivered:
        if value in sent_order and value not in seen:
            seen.add(value)
            by_stream.setdefault((topic, partition, sender[value]), []).append(value)
    for values in by_stream.values():
        keep = _longest_increasing(values, sent_order)
        out_of_order.extend(v for v in values if v not in keep)
    return sorted(out_of_order, key=sent_order.get)


def _longest_increasing(values: list, rank: dict) -> set:
    tails: list[int] = []
    tail_index: list[int] = []
    parent = [-1] * len(values)
    for index, value in enumerate(values):
        position = bisect_left(tails, rank[value])
        if position == len(tails):
            tails.append(rank[value])
            tail_index.append(index)
        else:
            tails[position] = rank[value]
            tail_index[position] = index
        parent[index] = tail_index[position - 1] if position else -1
    keep, index = set(), tail_index[-1] if tail_index else -1
    while index >= 0:
        keep.add(values[index])
        index = parent[index]
    return keep


def explain(history, value) -> list[str]:
    """The events that mention ``value``, as readable lines, for a failure message."""
    lines = []
    for event in history:
        data = event.data
        mentions = data.get("value") == value or value in (data.get("values") or ())
        if mentions or event.kind in ("crash", "broker_crash", "election", "fault"):
            detail = ", ".join(f"{k}={v!r}" for k, v in sorted(data.items())
                               if k not in ("values",))
            lines.append(f"t={event.time_ms}ms {event.actor} {event.kind}: {detail}")
    return lines
