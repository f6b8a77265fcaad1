"""Every claim of the course holds in its failing variant and is fixed by its fix."""

from __future__ import annotations

import pytest

from course_lib import scenarios
from course_lib.faults import CrashClient, FaultPlan

CLAIMS = scenarios.claims()
CASES = [(number, variant.name) for number, claim in CLAIMS.items()
         for variant in claim.variants]


@pytest.mark.parametrize(("number", "variant"), CASES)
def test_claim_variant_has_its_documented_outcome(number, variant, seed):
    run = scenarios.run(number, variant, seed)
    assert run.holds, (f"claim {number} {variant}: expected {run.expected}; "
                       f"got {run.report.summary()}")


def test_claims_one_to_fifteen_each_have_a_failing_and_a_fixed_variant():
    assert sorted(CLAIMS) == list(range(1, 16))
    for claim in CLAIMS.values():
        names = [v.name for v in claim.variants]
        assert "failing" in names and "fixed" in names


@pytest.mark.parametrize("number", sorted(CLAIMS))
def test_failing_variant_does_not_meet_the_fixed_expectation(number, seed):
    """The opposite outcome: the fix's promise is broken in the failing config."""
    claim = CLAIMS[number]
    failing = scenarios.run(number, "failing", seed)
    assert not claim.variant("fixed").holds(failing.report), failing.report.summary()


def test_claim_1_loses_acknowledged_writes_with_acks_1(seed):
    run = scenarios.run(1, "failing", seed)
    assert run.report.lost_acked == [v.encode() for v in scenarios.message_values(10)]
    assert any(e.kind == "truncate" for e in run.history)


def test_claim_2_fixed_rejects_writes_instead_of_acknowledging_them(seed):
    run = scenarios.run(2, "fixed", seed)
    assert run.report.acked == 0
    assert run.report.errors["NOT_ENOUGH_REPLICAS"] > 0


def test_claim_3_unclean_election_reuses_offsets_and_clean_goes_offline(seed):
    unclean = scenarios.run(3, "failing", seed)
    assert unclean.report.inconsistent_offsets
    assert any(e.kind == "election" and e.data["unclean"] for e in unclean.history)
    clean = scenarios.run(3, "fixed", seed)
    assert any(e.kind == "offline" for e in clean.history)
    assert not any(e.kind == "election" and e.data["unclean"] for e in clean.history)


def test_claim_4_idempotent_retry_is_deduplicated_by_the_broker(seed):
    run = scenarios.run(4, "fixed", seed)
    assert any(e.kind == "dedupe" for e in run.history)
    assert any(e.kind == "retry" for e in run.history)


def test_claim_7_reports_the_delivery_timeout(seed):
    run = scenarios.run(7, "failing", seed)
    nacks = [e for e in run.history if e.kind == "nack"]
    assert nacks and all(e.data["error"] == "_MSG_TIMED_OUT" for e in nacks)


def test_claim_8_skips_exactly_the_message_whose_processing_crashed(seed):
    run = scenarios.run(8, "failing", seed)
    assert run.report.lost == [b"m-004"]


def test_unknown_claim_or_variant_is_a_clear_error():
    with pytest.raises(KeyError, match="no claim 99"):
        scenarios.run(99)
    with pytest.raises(KeyError, match="has no variant 'sideways'"):
        scenarios.run(1, "sideways")


def test_table_prints_every_claim_and_exits_zero(capsys):
    assert scenarios.main([]) == 0
    out = capsys.readouterr().out
    for number in CLAIMS:
        assert f"{number:>2}. " in out
    assert "NO " not in out


def _history_of(number: int, variant: str, seed: int) -> str:
    return scenarios.run(number, variant, seed).history.to_jsonl()


@pytest.mark.parametrize("number", [1, 4, 9, 10])
def test_same_seed_gives_a_byte_identical_history(number, seed):
    assert _history_of(number, "failing", seed) == _history_of(number, "failing", seed)


def test_different_seed_gives_a_different_history_where_randomness_is_used():
    # Keyless records go to a "sticky" partition drawn from the producer's seeded stream.
    def sticky_partitions(seed: int) -> list[int]:
        cluster = scenarios.Cluster(brokers=3, seed=seed)
        cluster.create_topic("events", {"num.partitions": 8})
        producer = cluster.producer({})
        producer.produce("events", "x")
        producer.flush()
        return [e.data["partition"] for e in cluster.history if e.kind == "send"]

    draws = {tuple(sticky_partitions(seed)) for seed in range(6)}
    assert len(draws) > 1
    assert sticky_partitions(3) == sticky_partitions(3)


def test_at_least_once_with_every_single_crash_point_never_loses(seed):
    """Exhaustive single-crash enumeration over a clean run of the at-least-once loop."""
    clean = scenarios._cluster(seed, {}, FaultPlan())
    scenarios.seed_topic(clean, scenarios.message_values(5))
    scenarios.consume_with_restarts(clean, scenarios.at_least_once,
                                    {"enable.auto.commit": False})
    trace = [(p, n) for p, n in clean.faults.call_trace() if p.startswith(("consumer", "process"))]
    assert len(trace) >= 15
    for point, nth in trace:
        for phase in ("before", "after"):
            plan = FaultPlan((CrashClient(point, phase, nth),))
            cluster = scenarios._cluster(seed, {}, plan)
            scenarios.seed_topic(cluster, scenarios.message_values(5))
            scenarios.consume_with_restarts(cluster, scenarios.at_least_once,
                                            {"enable.auto.commit": False})
            report = scenarios.check(cluster.history)
            assert not report.lost, f"{plan!r}: {report.summary()}"


# ----- the notebook demos (not claims) ---------------------------------------------------


@pytest.mark.parametrize("idempotent", [False, True])
def test_retry_storm_duplicates_and_reorders_only_without_idempotence(idempotent, seed):
    run = scenarios.retry_storm(idempotent, seed)
    assert run.holds, run.report.summary()
    assert run.report.errors["REQUEST_TIMED_OUT"] >= 3
    assert not run.report.lost
    if idempotent:
        assert any(e.kind == "dedupe" for e in run.history)
        assert run.report.guarantee == "exactly-once"
    else:
        assert run.report.duplicated and run.report.reordered


def test_epoch_bump_renumbers_from_zero_under_a_new_epoch(seed):
    run = scenarios.epoch_bump(seed)
    assert run.holds, run.report.summary()
    rows = scenarios.log_records(run)
    assert [row["sequence"] for row in rows] == list(range(len(rows)))
    assert {row["epoch"] for row in rows} == {1}
    assert len({row["producer_id"] for row in rows}) == 1


@pytest.mark.parametrize(("transactional", "isolation", "guarantee"), [
    (False, "read_committed", "at-least-once"),
    (True, "read_committed", "exactly-once"),
    (True, "read_uncommitted", "at-least-once"),
])
def test_pipeline_is_exactly_once_only_with_transactions_read_committed(
        transactional, isolation, guarantee, seed):
    run = scenarios.pipeline(transactional, isolation, seed)
    assert run.holds and run.report.guarantee == guarantee, run.report.summary()
    rows = scenarios.log_records(run, scenarios.OUTPUT_TOPIC)
    if transactional:
        assert [r["marker"] for r in rows].count("ABORT") == 1
        assert [r["value"] for r in rows if r["aborted"]] == ["m-004"]
    else:
        assert not any(r["marker"] for r in rows)


def test_play_runs_a_story_under_any_config_and_judges_it_by_the_fix(seed):
    from course_lib.config import preset

    old = scenarios.play(4, preset("pre-3.0"), seed)
    assert old.variant == "custom" and not old.holds and old.report.duplicated
    assert scenarios.play(4, {}, seed).holds  # today's defaults: idempotent
    with pytest.raises(KeyError, match="no claim 0"):
        scenarios.play(0, {})


def test_producer_settings_resolve_idempotence_like_kafka():
    assert scenarios.producer_settings({})["enable.idempotence"] is True
    quietly_off = scenarios.producer_settings({"max.in.flight.requests.per.connection": 6})
    assert quietly_off["enable.idempotence"] is False
    refused = scenarios.producer_settings({"enable.idempotence": True,
                                           "max.in.flight.requests.per.connection": 6})
    assert "at most 5" in refused["error"]


def test_processed_counts_effects_and_inbox_skips(seed):
    twice = {row["value"]: row["times"] for row in scenarios.processed(scenarios.run(15))}
    assert sorted(v for v, n in twice.items() if n == 2) == ["m-004", "m-006"]
    inbox = scenarios.processed(scenarios.run(14, "fixed", seed))
    assert all(row["times"] == 1 for row in inbox)
    assert sum(row["skipped"] for row in inbox) == 10


def test_format_records_shows_markers_and_aborted_records(seed):
    text = scenarios.format_records(scenarios.log_records(scenarios.run(13, "fixed", seed)))
    assert "ABORT marker" in text and "COMMIT marker" in text and "aborted" in text


def test_support_table_backs_every_cell_of_the_summary_with_a_run(seed):
    rows = scenarios.support_table(seed)
    assert all(row["backed"] for row in rows), scenarios.format_support_table(rows)
    cells = {(row["side"], row["guarantee"]) for row in rows}
    assert cells == {(side, g) for side in ("producer", "consumer")
                     for g in ("at-most-once", "at-least-once", "exactly-once")}
    assert "NO" not in scenarios.format_support_table(rows).split()
