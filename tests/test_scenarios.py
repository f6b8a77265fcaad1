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
