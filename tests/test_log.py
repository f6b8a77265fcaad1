"""course_lib.log: a replica's records, LEO, high watermark, epoch cache and producer state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.log import PRODUCER_BATCH_WINDOW, PartitionLog, Record

PID = 1001


def plain(log: PartitionLog, value: bytes = b"v", epoch: int = 0) -> Record:
    """Append one non-idempotent record at the log end."""
    return log.append(Record(log.log_end_offset, None, value, epoch, 0))


def batch(log: PartitionLog, first_seq: int, count: int = 1, *, pid: int = PID,
          producer_epoch: int = 0, leader_epoch: int = 0) -> int:
    """Append one idempotent batch as the broker does; returns its base offset."""
    base = log.log_end_offset
    for index in range(count):
        log.append(Record(base + index, None, f"{pid}/{first_seq + index}".encode(),
                          leader_epoch, 0, pid, producer_epoch, first_seq + index, first_seq))
    return base


def marker(log: PartitionLog, control: str = "COMMIT", *, pid: int = PID,
           producer_epoch: int = 0, leader_epoch: int = 0) -> None:
    log.append(Record(log.log_end_offset, None, None, leader_epoch, 0, pid, producer_epoch,
                      -1, -1, control, True))


# ----- append, LEO, read ---------------------------------------------------------------------

def test_an_empty_log_has_nothing():
    log = PartitionLog()
    assert (log.log_end_offset, log.high_watermark, log.epochs, log.last_epoch) == (0, 0, [], -1)
    assert log.end_offset_for_epoch(0) == (-1, 0)


def test_append_assigns_consecutive_offsets_and_grows_the_leo():
    log = PartitionLog()
    for value in (b"a", b"b", b"c"):
        plain(log, value)
    assert log.log_end_offset == 3
    assert [r.offset for r in log.records] == [0, 1, 2]


def test_append_at_any_offset_but_the_log_end_is_refused():
    log = PartitionLog()
    plain(log)
    with pytest.raises(ValueError, match="log end is 1"):
        log.append(Record(3, None, b"x", 0, 0))
    with pytest.raises(ValueError):
        log.append(Record(0, None, b"x", 0, 0))
    assert log.log_end_offset == 1


def test_read_is_bounded_by_stop_and_limit():
    log = PartitionLog()
    for i in range(6):
        plain(log, bytes([48 + i]))
    assert [r.offset for r in log.read(1, 4, 100)] == [1, 2, 3]
    assert [r.offset for r in log.read(1, 6, 2)] == [1, 2]
    assert log.read(6, 6, 10) == []


def test_values_stop_at_the_high_watermark_and_skip_control_records():
    log = PartitionLog()
    plain(log, b"a")
    marker(log)
    plain(log, b"b")
    plain(log, b"c")
    log.high_watermark = 3
    assert log.values() == [b"a", b"b"]
    assert log.values(stop=4) == [b"a", b"b", b"c"]


# ----- truncation and the high watermark ---------------------------------------------------

def test_truncate_drops_from_the_offset_on_and_returns_what_it_dropped():
    log = PartitionLog()
    for value in (b"a", b"b", b"c", b"d"):
        plain(log, value)
    dropped = log.truncate(2)
    assert [r.value for r in dropped] == [b"c", b"d"]
    assert log.log_end_offset == 2
    assert [r.value for r in log.records] == [b"a", b"b"]


def test_truncate_below_the_high_watermark_clamps_it():
    log = PartitionLog()
    for _ in range(5):
        plain(log)
    log.high_watermark = 4
    log.truncate(2)
    assert log.high_watermark == 2


def test_truncate_above_the_high_watermark_leaves_it():
    log = PartitionLog()
    for _ in range(5):
        plain(log)
    log.high_watermark = 1
    log.truncate(3)
    assert log.high_watermark == 1


@pytest.mark.parametrize("offset", [3, 4, 100])
def test_truncate_at_or_past_the_log_end_drops_nothing(offset):
    log = PartitionLog()
    for _ in range(3):
        plain(log)
    log.high_watermark = 3
    assert log.truncate(offset) == []
    assert (log.log_end_offset, log.high_watermark) == (3, 3)


def test_offsets_are_reused_after_truncation():
    log = PartitionLog()
    for value in (b"a", b"b", b"c"):
        plain(log, value)
    log.truncate(1)
    plain(log, b"B", epoch=1)
    assert [(r.offset, r.value) for r in log.records] == [(0, b"a"), (1, b"B")]


# ----- the leader-epoch cache (KIP-101) --------------------------------------------------------

def test_each_new_leader_epoch_is_cached_with_its_first_offset():
    log = PartitionLog()
    for epoch in (0, 0, 2, 2, 2, 5):
        plain(log, epoch=epoch)
    assert log.epochs == [(0, 0), (2, 2), (5, 5)]
    assert log.last_epoch == 5


def test_start_epoch_begins_an_epoch_at_the_log_end_with_no_records():
    log = PartitionLog()
    plain(log, epoch=1)
    plain(log, epoch=1)
    log.start_epoch(3)
    assert log.epochs == [(1, 0), (3, 2)]
    assert log.log_end_offset == 2


def test_start_epoch_ignores_an_epoch_that_is_not_newer():
    log = PartitionLog()
    plain(log, epoch=2)
    log.start_epoch(2)
    log.start_epoch(1)
    assert log.epochs == [(2, 0)]


def test_records_of_an_already_started_epoch_do_not_move_its_start():
    log = PartitionLog()
    log.start_epoch(4)
    plain(log, epoch=4)
    plain(log, epoch=4)
    assert log.epochs == [(4, 0)]


@pytest.fixture
def three_epochs() -> PartitionLog:
    """Epoch 1 at offsets 0-2, epoch 3 at 3-4, epoch 4 at 5-7 (LEO 8)."""
    log = PartitionLog()
    for epoch, count in ((1, 3), (3, 2), (4, 3)):
        for _ in range(count):
            plain(log, epoch=epoch)
    return log


@pytest.mark.parametrize("requested, expected", [
    (0, (-1, 0)),   # older than anything known
    (1, (1, 3)),    # ends where epoch 3 starts
    (2, (1, 3)),    # unknown: the largest epoch below it, and where that one ends
    (3, (3, 5)),
    (4, (4, 8)),    # the newest epoch ends at the log end
    (9, (4, 8)),    # newer than anything known: the newest, up to the log end
])
def test_end_offset_for_epoch_follows_kip_101(three_epochs, requested, expected):
    assert three_epochs.end_offset_for_epoch(requested) == expected


def test_end_offset_for_an_epoch_a_new_leader_started_with_no_records():
    log = PartitionLog()
    for _ in range(3):
        plain(log, epoch=0)
    log.start_epoch(2)
    assert log.end_offset_for_epoch(0) == (0, 3)
    assert log.end_offset_for_epoch(1) == (0, 3)
    assert log.end_offset_for_epoch(2) == (2, 3)
    plain(log, epoch=2)
    assert log.end_offset_for_epoch(0) == (0, 3)
    assert log.end_offset_for_epoch(2) == (2, 4)


def test_truncate_forgets_epochs_that_started_after_the_offset(three_epochs):
    three_epochs.truncate(4)
    assert three_epochs.epochs == [(1, 0), (3, 3)]
    assert three_epochs.end_offset_for_epoch(4) == (3, 4)


def test_truncate_forgets_an_epoch_that_started_exactly_at_the_offset(three_epochs):
    # Kafka's LeaderEpochFileCache.truncateFromEnd removes start offsets >= the offset.
    three_epochs.truncate(5)
    assert three_epochs.epochs == [(1, 0), (3, 3)]
    assert three_epochs.last_epoch == 3


def test_truncate_at_the_log_end_forgets_an_epoch_led_without_records():
    # A replica that led epoch 2 and wrote nothing must not keep presenting epoch 2
    # to the next leader (Kafka's UnifiedLog.truncateTo, "conflicting epoch entry").
    log = PartitionLog()
    for _ in range(3):
        plain(log, epoch=1)
    log.start_epoch(2)
    assert log.truncate(3) == []
    assert log.epochs == [(1, 0)]


def test_truncate_to_zero_forgets_every_epoch(three_epochs):
    three_epochs.truncate(0)
    assert (three_epochs.epochs, three_epochs.log_end_offset) == ([], 0)


def test_a_leader_that_lost_leadership_before_replicating_rejoins_the_isr(cluster):
    """Regression: the old leader's empty epoch used to make it diverge forever."""
    tp = ("events", 0)
    old_leader = cluster.leader("events")
    cluster.kill_broker(old_leader)
    cluster.settle(100)
    cluster.restart_broker(old_leader)
    events_before = cluster.world.events_run
    cluster.settle(10_000)
    assert old_leader in cluster.partition(tp).isr
    assert cluster.world.events_run - events_before < 5_000  # no fetch/diverge busy loop
    producer = cluster.producer()
    producer.produce("events", b"after")
    assert producer.flush(10) == 0
    cluster.settle(1_000)
    assert cluster.brokers[old_leader].logs[tp].values() == [b"after"]


# ----- idempotent producer state: check_sequence ------------------------------------------------

def test_an_unknown_producer_starts_at_sequence_zero():
    log = PartitionLog()
    assert log.check_sequence(PID, 0, 0, 3) == ("ok", -1)
    assert log.check_sequence(PID, 0, 1, 1) == ("out_of_order", -1)


def test_the_next_sequence_after_the_last_batch_is_ok():
    log = PartitionLog()
    batch(log, 0, count=3)
    assert log.check_sequence(PID, 0, 3, 2) == ("ok", -1)


def test_a_gap_in_sequences_is_out_of_order():
    log = PartitionLog()
    batch(log, 0, count=3)
    assert log.check_sequence(PID, 0, 4, 1) == ("out_of_order", -1)


def test_a_retry_of_the_last_batch_is_a_duplicate_with_its_first_offset():
    log = PartitionLog()
    plain(log)
    base = batch(log, 0, count=3)
    assert base == 1
    assert log.check_sequence(PID, 0, 0, 3) == ("duplicate", 1)


def test_a_retry_of_each_of_the_last_five_batches_is_a_duplicate():
    log = PartitionLog()
    bases = {}
    for first_seq in range(0, 14, 2):  # seven batches of two
        plain(log, b"other")  # interleave another writer so offsets != sequences
        bases[first_seq] = batch(log, first_seq, count=2)
    window = sorted(bases)[-PRODUCER_BATCH_WINDOW:]
    assert window == [4, 6, 8, 10, 12]
    for first_seq in window:
        assert log.check_sequence(PID, 0, first_seq, 2) == ("duplicate", bases[first_seq])


def test_a_retry_older_than_the_five_batch_window_is_out_of_order():
    log = PartitionLog()
    for first_seq in range(6):
        batch(log, first_seq)
    assert log.check_sequence(PID, 0, 1, 1) == ("duplicate", 1)
    assert log.check_sequence(PID, 0, 0, 1) == ("out_of_order", -1)


def test_a_retry_with_a_different_record_count_is_not_a_duplicate():
    log = PartitionLog()
    batch(log, 0, count=3)
    assert log.check_sequence(PID, 0, 0, 2) == ("out_of_order", -1)


def test_an_older_producer_epoch_is_fenced():
    log = PartitionLog()
    batch(log, 0, producer_epoch=2)
    assert log.check_sequence(PID, 1, 1, 1) == ("fenced", -1)
    assert log.check_sequence(PID, 1, 0, 1) == ("fenced", -1)


def test_a_newer_producer_epoch_must_start_at_sequence_zero():
    log = PartitionLog()
    batch(log, 0, count=4)
    assert log.check_sequence(PID, 1, 0, 1) == ("ok", -1)
    assert log.check_sequence(PID, 1, 4, 1) == ("out_of_order", -1)


def test_after_an_epoch_bump_the_old_epochs_batches_are_fenced_not_duplicates():
    log = PartitionLog()
    batch(log, 0, count=2, producer_epoch=0)
    batch(log, 0, count=1, producer_epoch=1)
    assert log.check_sequence(PID, 0, 0, 2) == ("fenced", -1)
    assert log.check_sequence(PID, 1, 0, 1) == ("duplicate", 2)
    assert log.check_sequence(PID, 1, 1, 1) == ("ok", -1)


def test_producers_are_tracked_independently():
    log = PartitionLog()
    batch(log, 0, count=2, pid=1)
    batch(log, 0, count=1, pid=2)
    assert log.check_sequence(1, 0, 2, 1) == ("ok", -1)
    assert log.check_sequence(2, 0, 1, 1) == ("ok", -1)
    assert log.check_sequence(2, 0, 0, 1) == ("duplicate", 2)


def test_control_markers_do_not_move_the_sequence():
    log = PartitionLog()
    batch(log, 0, count=2)
    marker(log, "COMMIT")
    assert log.check_sequence(PID, 0, 2, 1) == ("ok", -1)
    assert log.check_sequence(PID, 0, 0, 2) == ("duplicate", 0)


def test_non_idempotent_records_leave_no_producer_state():
    log = PartitionLog()
    plain(log)
    assert log.producers == {}


def test_a_truncated_batch_is_no_longer_a_duplicate():
    log = PartitionLog()
    batch(log, 0, count=2)
    batch(log, 2, count=2)
    third = batch(log, 4, count=1)
    log.truncate(third)
    assert log.check_sequence(PID, 0, 4, 1) == ("ok", -1)
    assert log.check_sequence(PID, 0, 2, 2) == ("duplicate", 2)
    assert log.check_sequence(PID, 0, 5, 1) == ("out_of_order", -1)


def test_truncating_part_of_a_batch_keeps_only_what_remains():
    log = PartitionLog()
    batch(log, 0, count=4)
    log.truncate(2)
    assert log.check_sequence(PID, 0, 0, 4) == ("out_of_order", -1)
    assert log.check_sequence(PID, 0, 0, 2) == ("duplicate", 0)
    assert log.check_sequence(PID, 0, 2, 2) == ("ok", -1)


def test_truncating_all_of_a_producers_records_forgets_it():
    log = PartitionLog()
    plain(log)
    batch(log, 0, count=3)
    log.truncate(1)
    assert log.producers == {}
    assert log.check_sequence(PID, 0, 0, 3) == ("ok", -1)
    assert log.check_sequence(PID, 0, 3, 1) == ("out_of_order", -1)


def test_the_window_is_rebuilt_from_the_records_that_remain():
    log = PartitionLog()
    for first_seq in range(7):
        batch(log, first_seq)
    log.truncate(6)  # batches 0..5 remain; the window is 1..5
    assert log.check_sequence(PID, 0, 1, 1) == ("duplicate", 1)
    assert log.check_sequence(PID, 0, 0, 1) == ("out_of_order", -1)
    assert log.check_sequence(PID, 0, 6, 1) == ("ok", -1)


def test_rebuilt_producer_state_keeps_the_newest_epoch():
    log = PartitionLog()
    batch(log, 0, producer_epoch=0)
    batch(log, 0, producer_epoch=1)
    plain(log)
    log.truncate(2)
    assert log.check_sequence(PID, 0, 1, 1) == ("fenced", -1)
    assert log.check_sequence(PID, 1, 1, 1) == ("ok", -1)


def test_repr_shows_leo_hw_and_epochs():
    log = PartitionLog()
    plain(log, epoch=3)
    assert repr(log) == "<PartitionLog leo=1 hw=0 epochs=[(3, 0)]>"


# ----- properties: invariants under any sequence of operations -----------------------------------

operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 6), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("batch"), st.integers(0, 6), st.integers(1, 3), st.integers(0, 1),
              st.integers(1, 3)),
    st.tuples(st.just("truncate"), st.integers(0, 40)),
    st.tuples(st.just("start_epoch"), st.integers(0, 6)),
    st.tuples(st.just("high_watermark"), st.integers(0, 40)),
    st.tuples(st.just("marker"), st.integers(1, 3)),
), max_size=40)


def apply(log: PartitionLog, operation: tuple) -> list[Record]:
    """Do one operation as a broker could; returns the records truncation dropped."""
    kind = operation[0]
    if kind == "append":
        _, epoch, pid, pepoch = operation
        seq = -1
        if pid:
            state = log.producers.get(pid)
            seq = state.last_seq + 1 if state is not None and state.epoch == pepoch else 0
        log.append(Record(log.log_end_offset, None, b"x", max(epoch, log.last_epoch), 0,
                          pid or -1, pepoch if pid else -1, seq, seq))
    elif kind == "batch":
        _, epoch, pid, pepoch, count = operation
        state = log.producers.get(pid)
        first = state.last_seq + 1 if state is not None and state.epoch == pepoch else 0
        if log.check_sequence(pid, pepoch, first, count)[0] == "ok":
            batch(log, first, count, pid=pid, producer_epoch=pepoch,
                  leader_epoch=max(epoch, log.last_epoch))
    elif kind == "truncate":
        return log.truncate(min(operation[1], log.log_end_offset + 2))
    elif kind == "start_epoch":
        log.start_epoch(operation[1])
    elif kind == "high_watermark":
        log.high_watermark = min(operation[1], log.log_end_offset)
    elif kind == "marker":
        marker(log, pid=operation[1], leader_epoch=max(0, log.last_epoch))
    return []


def check_invariants(log: PartitionLog) -> None:
    leo = log.log_end_offset
    assert [r.offset for r in log.records] == list(range(leo))
    assert 0 <= log.high_watermark <= leo
    epochs = [epoch for epoch, _ in log.epochs]
    starts = [start for _, start in log.epochs]
    assert epochs == sorted(set(epochs)), "epochs strictly ascending"
    assert starts == sorted(starts), "start offsets non-decreasing"
    assert all(0 <= start <= leo for start in starts)
    for record in log.records:
        covering = [e for e, start in log.epochs if start <= record.offset]
        assert covering and covering[-1] == record.leader_epoch, "epoch cache matches records"


@settings(max_examples=150, deadline=None)
@given(operations)
def test_log_invariants_hold_after_any_appends_and_truncations(ops):
    log = PartitionLog()
    for operation in ops:
        before = list(log.records)
        dropped = apply(log, operation)
        if operation[0] == "truncate":
            assert before == log.records + dropped, "truncation drops exactly a suffix"
            # KIP-101: after truncating, a replica claims no epoch it holds no record of.
            assert all(start < log.log_end_offset for _, start in log.epochs)
        else:
            assert log.records[:len(before)] == before, "only truncation removes records"
        check_invariants(log)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(0, 3), st.integers(0, 8), st.integers(1, 3))
def test_producer_state_equals_a_replay_of_the_surviving_records(ops, pid, first, count):
    log = PartitionLog()
    for operation in ops:
        apply(log, operation)
    replay = PartitionLog()
    for record in log.records:
        replay.append(record)
    for producer_epoch in range(2):
        assert (log.check_sequence(pid, producer_epoch, first, count)
                == replay.check_sequence(pid, producer_epoch, first, count))
    assert {p: (s.epoch, list(s.batches)) for p, s in log.producers.items()} == {
        p: (s.epoch, list(s.batches)) for p, s in replay.producers.items()}


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(-1, 8))
def test_end_offset_for_epoch_is_a_known_epoch_and_a_valid_offset(ops, requested):
    log = PartitionLog()
    for operation in ops:
        apply(log, operation)
    found, end = log.end_offset_for_epoch(requested)
    known = [epoch for epoch, _ in log.epochs]
    assert found == max([e for e in known if e <= requested], default=-1)
    assert 0 <= end <= log.log_end_offset
    if found == log.last_epoch and found >= 0:
        assert end == log.log_end_offset
    elif found >= 0:
        assert end == log.epochs[known.index(found) + 1][1]
    # A follower that truncates to ``end`` keeps no record of an epoch newer than found.
    assert all(r.leader_epoch <= max(found, -1) for r in log.records[:end])
