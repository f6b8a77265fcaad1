"""Domain events: the same seed gives the same traffic everywhere, and it looks like traffic."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from course_lib import data

ROOT = Path(__file__).resolve().parents[1]


def _traffic(seed: int) -> str:
    placed = data.orders(8, seed)
    return json.dumps([placed, data.payments_for(placed, seed)], sort_keys=True)


def test_same_seed_same_events():
    assert _traffic(3) == _traffic(3)
    placed = data.orders(4, 3)
    assert [data.to_message(o) for o in placed] == [data.to_message(o) for o in data.orders(4, 3)]


def test_same_seed_same_events_in_a_fresh_process_with_another_hash_seed():
    code = ("import json; from course_lib import data; placed = data.orders(8, 3); "
            "print(json.dumps([placed, data.payments_for(placed, 3)], sort_keys=True))")
    env = {**os.environ, "PYTHONHASHSEED": "987"}
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == _traffic(3)


def test_different_seeds_differ():
    assert _traffic(1) != _traffic(2)
    first, second = data.orders(5, 1), data.orders(5, 2)
    assert [o["customer"] for o in first] != [o["customer"] for o in second]
    assert {o["event_id"] for o in first}.isdisjoint(o["event_id"] for o in second)


def test_orders_look_like_orders():
    placed = data.orders(50, 11)
    assert len(placed) == 50
    assert len({o["order_id"] for o in placed}) == 50
    assert len({o["event_id"] for o in placed}) == 50
    prices = dict(data.CATALOG)
    for order in placed:
        assert order["type"] == "order_placed"
        assert order["order_id"].startswith("ORD-") and order["order_id"][4:].isdigit()
        uuid.UUID(order["event_id"])
        assert order["customer"].strip() and "@" in order["email"]
        assert order["amount_cents"] == prices[order["item"]] * order["quantity"] > 0
        assert isinstance(order["amount_cents"], int)
        assert order["currency"] in data.CURRENCIES
        assert order["created_at"] == data.timestamp(order["created_ms"])
        datetime.fromisoformat(order["created_at"].replace("Z", "+00:00"))
    times = [o["created_ms"] for o in placed]
    assert times == sorted(times) and times[0] == 0


def test_created_at_follows_virtual_time_not_the_wall_clock():
    assert data.timestamp(0) == "2024-05-06T09:00:00.000Z"
    assert data.orders(1, 0, start_ms=1_500)[0]["created_at"] == "2024-05-06T09:00:01.500Z"
    assert data.timestamp(86_400_000 + 7) == "2024-05-07T09:00:00.007Z"


def test_payments_match_their_orders():
    placed = data.orders(20, 4)
    paid = data.payments_for(placed, 4)
    by_order = {o["order_id"]: o for o in placed}
    assert sorted(p["order_id"] for p in paid) == sorted(by_order)
    assert {p["event_id"] for p in paid}.isdisjoint(o["event_id"] for o in placed)
    assert len({p["payment_id"] for p in paid}) == 20
    for payment in paid:
        order = by_order[payment["order_id"]]
        assert payment["type"] == "payment_captured"
        assert payment["amount_cents"] == order["amount_cents"]
        assert payment["currency"] == order["currency"]
        assert payment["method"] in data.PAYMENT_METHODS
        assert payment["created_ms"] > order["created_ms"]
    assert [p["created_ms"] for p in paid] == sorted(p["created_ms"] for p in paid)


def test_messages_carry_the_order_key_and_an_event_id():
    order = data.orders(1, 9)[0]
    key, value = data.to_message(order)
    assert key == order["order_id"]
    assert isinstance(value, str)
    assert data.from_message(value) == order
    assert data.from_message(value.encode()) == order
    assert json.loads(value)["event_id"] == order["event_id"]
    with pytest.raises(ValueError, match="event_id"):
        data.to_message({"order_id": "ORD-1"})


def test_labels_are_short_and_never_fail():
    order = data.orders(1, 2)[0]
    payment = data.payments_for([order], 2)[0]
    assert data.label(b"m-007") == "m-007"
    assert data.label(data.to_message(order)[1]) == order["order_id"]
    assert data.label(data.to_message(payment)[1].encode()) == payment["payment_id"]
    assert data.label(None) == "(null)"
    assert data.label(b"\xff{") == "\\xff{"
    long = data.label("{not json, but long enough to be cut}")
    assert len(long) == data.LABEL_MAX_CHARS and long.endswith("\u2026")


def test_nothing_global_is_touched():
    state = random.getstate()
    data.orders(5, 1)
    data.payments_for(data.orders(2, 1), 1)
    assert random.getstate() == state


def test_count_is_checked():
    assert data.orders(0, 1) == []
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="count"):
            data.orders(bad, 1)
