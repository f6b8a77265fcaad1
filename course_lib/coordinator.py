"""The group coordinator: consumer group membership and committed offsets.

Committed offsets are the only memory a consumer group has: a restarted
consumer resumes where its group last committed, so *when* the commit happens
relative to processing decides between at-most-once and at-least-once. An
offset commit is a request like any other; it takes effect when it reaches the
coordinator, and a commit still in flight when its process dies never does.

Simplifications, stated in the notebooks: one coordinator for all groups that
never crashes; membership changes are immediate (a crashed member leaves at
once instead of after ``session.timeout.ms``); partitions are assigned with
Kafka's range assignor over members sorted by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from course_lib.errors import KafkaError


@dataclass
class Group:
    """One consumer group: its generation, members and committed offsets."""

    group_id: str
    generation: int = 0
    members: dict[str, list[str]] = field(default_factory=dict)  # member -> topics
    assignment: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


class Coordinator:
    """Handles JoinGroup/LeaveGroup (directly) and OffsetCommit (over the network)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.name = "coordinator"
        self.alive = True
        self.incarnation = 0
        self.groups: dict[str, Group] = {}

    def __repr__(self) -> str:
        return f"<Coordinator groups={sorted(self.groups)}>"

    def group(self, group_id: str) -> Group:
        """The group called ``group_id``, created empty on first use."""
        if group_id not in self.groups:
            self.groups[group_id] = Group(group_id)
        return self.groups[group_id]

    def join(self, group_id: str, member: str, topics: list[str]) -> None:
        """Add or update a member and rebalance the group."""
        group = self.group(group_id)
        group.members[member] = list(topics)
        self._rebalance(group, f"{member} joined")

    def leave(self, group_id: str, member: str) -> None:
        """Remove a member (a clean close or a crash) and rebalance."""
        group = self.group(group_id)
        if group.members.pop(member, None) is not None:
            self._rebalance(group, f"{member} left")

    def _rebalance(self, group: Group, reason: str) -> None:
        group.generation += 1
        group.assignment = {member: [] for member in group.members}
        topics = sorted({t for ts in group.members.values() for t in ts})
        for topic in topics:
            members = sorted(m for m, ts in group.members.items() if topic in ts)
            partitions = self.cluster.partitions_of(topic)
            share, extra = divmod(len(partitions), len(members))
            start = 0
            for index, member in enumerate(members):
                size = share + (1 if index < extra else 0)
                group.assignment[member].extend((topic, p) for p in
                                                partitions[start:start + size])
                start += size
        self.cluster.history.record("rebalance", self.name, group=group.group_id,
                                    generation=group.generation, reason=reason,
                                    assignment={m: [f"{t}-{p}" for t, p in tps]
                                                for m, tps in group.assignment.items()})

    def committed(self, group_id: str, tp: tuple[str, int]) -> int | None:
        """The group's committed offset for ``tp``, or None if it never committed."""
        return self.group(group_id).committed.get(tp)

    def receive(self, envelope) -> None:
        """Apply an OffsetCommit request and answer it."""
        if envelope.api != "offset_commit":
            return
        body = envelope.body
        group = self.group(body["group"])
        generation = body["generation"]
        error = None
        if generation >= 0 and body["member"] not in group.members:
            error = KafkaError.UNKNOWN_MEMBER_ID
        elif generation >= 0 and generation != group.generation:
            error = KafkaError.ILLEGAL_GENERATION
        if error is None:
            self.apply_commit(group, body["offsets"], envelope.src)
        self.cluster.network.send(self, envelope.src, envelope.api, "response",
                                  {"error": error}, envelope.correlation_id)

    def apply_commit(self, group: Group, offsets: list[tuple[str, int, int]], actor: str) -> None:
        """Store offsets and record the commit in the history."""
        for topic, partition, offset in offsets:
            group.committed[(topic, partition)] = offset
            self.cluster.history.record("commit", actor, group=group.group_id, topic=topic,
                                        partition=partition, offset=offset)
