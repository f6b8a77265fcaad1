"""Domain events (orders and payments) that read like real traffic, from one seed.

Diagrams and exercises are easier to follow when a message says "order
ORD-48213, Joshua Wood, $42.50" than "m-007". These events come from a Faker
instance seeded on its own (``Faker("en_US")`` + ``seed_instance(seed)``, never
the global ``Faker.seed``, which would reach into every other user of Faker),
so the same seed gives the same events in every run and every process.

Faker's determinism has caveats, handled here:

* **relative dates** (``date_time_this_year`` …) depend on today's date, so
  ``created_at`` is derived from the simulation's *virtual* time instead,
  counted from the fixed :data:`EPOCH`;
* **locales**: several locales make Faker pick one per call, so the locale is
  pinned to ``en_US``;
* **versions**: Faker only promises the same output for the same seed on the
  same Faker version (its word lists change), so tests compare runs with each
  other, never with values written down under another version;
* **uniqueness**: ``fake.unique`` keeps state between calls; it is not used.
  Order and payment numbers are a seeded base plus a counter, so they are
  unique by construction (the checker tells messages apart by their value).

Messages follow the course's outbox contract (DESIGN §6, ps3): the key is the
order id and the value is JSON carrying an ``event_id``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

LOCALE = "en_US"
EPOCH = datetime(2024, 5, 6, 9, 0, 0, tzinfo=UTC)  # virtual time 0 ms, a Monday morning
CATALOG = (  # (item, unit price in cents): a small coffee shop, so amounts look plausible
    ("espresso beans 1 kg", 2450),
    ("filter papers x100", 599),
    ("ceramic pour-over", 3200),
    ("burr grinder", 12900),
    ("milk jug 600 ml", 1850),
    ("gift card", 5000),
    ("decaf beans 500 g", 1390),
    ("travel mug", 2200),
)
CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP")  # mostly one market, a few others
PAYMENT_METHODS = ("card", "card", "card", "paypal", "apple_pay", "bank_transfer")
ORDER_GAP_MS = (150, 2_500)  # orders arrive a fraction of a second to seconds apart
PAYMENT_DELAY_MS = (300, 4_000)  # a payment is captured shortly after its order
LABEL_KEYS = ("payment_id", "order_id", "event_id", "id")
LABEL_MAX_CHARS = 18


def _faker(seed: int, stream: str):
    """A Faker of its own, pinned locale, seeded: nothing global is touched.

    Each kind of event draws from its own ``stream``, so orders and payments of
    one seed are independent (the same stream twice could repeat an event id).
    A string seed is hashed by ``random.seed`` with SHA-512, not ``hash()``, so
    it does not depend on PYTHONHASHSEED.
    """
    from faker import Faker  # imported here so ``import course_lib.data`` stays cheap

    fake = Faker(LOCALE)
    fake.seed_instance(f"{stream}/{seed}")
    return fake


def timestamp(virtual_ms: int) -> str:
    """The wall-clock-looking time of a virtual instant: ISO 8601, UTC, milliseconds."""
    moment = EPOCH + timedelta(milliseconds=virtual_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def orders(count: int, seed: int = 0, *, start_ms: int = 0) -> list[dict]:
    """``count`` orders placed from virtual time ``start_ms`` on, the same for the same seed.

    Each is a dict with ``type``, ``event_id``, ``order_id``, ``customer``,
    ``email``, ``item``, ``quantity``, ``amount_cents``, ``currency``,
    ``created_ms`` (virtual time) and ``created_at`` (that time as a date).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, not {count!r}")
    fake = _faker(seed, "orders")
    base = fake.random_int(10_000, 89_999)
    now_ms, made = start_ms, []
    for index in range(count):
        item, price_cents = fake.random_element(CATALOG)
        quantity = fake.random_element((1, 1, 1, 2, 2, 3))
        made.append({
            "type": "order_placed",
            "event_id": fake.uuid4(),
            "order_id": f"ORD-{base + index}",
            "customer": fake.name(),
            "email": fake.email(),
            "item": item,
            "quantity": quantity,
            "amount_cents": price_cents * quantity,
            "currency": fake.random_element(CURRENCIES),
            "created_ms": now_ms,
            "created_at": timestamp(now_ms),
        })
        now_ms += fake.random_int(*ORDER_GAP_MS)
    return made


def payments_for(placed: list[dict], seed: int = 0) -> list[dict]:
    """One payment per order, for its amount, captured a little later; ordered by time.

    Each is a dict with ``type``, ``event_id``, ``payment_id``, ``order_id``,
    ``amount_cents``, ``currency``, ``method``, ``created_ms`` and ``created_at``.
    """
    fake = _faker(seed, "payments")
    base = fake.random_int(100_000, 899_999)
    made = []
    for index, order in enumerate(placed):
        at_ms = order["created_ms"] + fake.random_int(*PAYMENT_DELAY_MS)
        made.append({
            "type": "payment_captured",
            "event_id": fake.uuid4(),
            "payment_id": f"PAY-{base + index}",
            "order_id": order["order_id"],
            "amount_cents": order["amount_cents"],
            "currency": order["currency"],
            "method": fake.random_element(PAYMENT_METHODS),
            "created_ms": at_ms,
            "created_at": timestamp(at_ms),
        })
    return sorted(made, key=lambda payment: (payment["created_ms"], payment["payment_id"]))


def to_message(event: dict) -> tuple[str, str]:
    """``(key, value)`` for producing ``event``: the order id, and compact sorted JSON.

    Sorted keys make the value a pure function of the event, so the same event
    is always the same bytes (the checker identifies messages by value).
    """
    if "event_id" not in event or "order_id" not in event:
        raise ValueError("an event needs an 'event_id' and an 'order_id' to become a message")
    return event["order_id"], json.dumps(event, sort_keys=True, separators=(",", ":"))


def from_message(value: str | bytes) -> dict:
    """The event inside a message value made by :func:`to_message`."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return json.loads(value)


def label(value: object, max_chars: int = LABEL_MAX_CHARS) -> str:
    """A short name for a message value, for diagrams: its id if it is an event, else its text.

    ``b'm-007'`` gives ``m-007``; a payment's JSON gives ``PAY-512344``; long
    text is cut with an ellipsis. Never raises: any value gets some label.
    """
    if value is None:
        return "(null)"
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if isinstance(event, dict):
            for key in LABEL_KEYS:
                if isinstance(event.get(key), (str, int)):
                    text = str(event[key])
                    break
    return text if len(text) <= max_chars else text[:max_chars - 1] + "\u2026"
