"""A corpus of ps3 answers (the outbox), right, wrong and hostile, as SOURCE strings.

Each answer is the text of the notebook's answer cells, as a student would
write it: the tests feed it to the checks (defined in the sandbox's zygote,
exactly as the trusted pass does) and to ``course_lib.autograde`` through a
submission notebook. ``RIGHT`` holds the three right functions; a wrong answer
replaces ONE of them and must lose only that function's points.
"""

from __future__ import annotations

PLACE_ORDER = '''
import json

def place_order(db, order):
    event_id = "order-" + order["id"]
    payload = json.dumps({"event_id": event_id, "order_id": order["id"],
                          "customer": order["customer"], "amount_cents": order["amount_cents"]})
    with db:
        db.execute("INSERT INTO orders (id, customer, amount_cents) VALUES (?, ?, ?)",
                   (order["id"], order["customer"], order["amount_cents"]))
        db.execute("INSERT INTO outbox (event_id, topic, key, payload) VALUES (?, ?, ?, ?)",
                   (event_id, "orders", order["id"], payload))
'''

RELAY_ONCE = '''
def relay_once(db, producer):
    rows = db.execute("SELECT id, topic, key, payload FROM outbox WHERE sent = 0 "
                      "ORDER BY id").fetchall()
    for row_id, topic, key, payload in rows:
        outcome = {}
        producer.produce(topic, payload, key=key,
                         on_delivery=lambda err, msg: outcome.update(err=err))
        producer.flush()
        if "err" not in outcome or outcome["err"] is not None:
            return
        with db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
'''

HANDLE_PAYMENT = '''
import json
import sqlite3

def handle_payment(db, message):
    event = json.loads(message.value())
    with db:
        try:
            db.execute("INSERT INTO inbox (event_id) VALUES (?)", (event["event_id"],))
        except sqlite3.IntegrityError:
            return
        db.execute("INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
                   (event["event_id"], message.key().decode(), event["amount_cents"]))
'''

# Right too: produce every unsent row, flush once, mark the acknowledged prefix
# (course_lib.outbox.Relay's way); a batch fails or succeeds as a whole here.
RELAY_BATCH = '''
def relay_once(db, producer):
    rows = db.execute("SELECT id, topic, key, payload FROM outbox WHERE sent = 0 "
                      "ORDER BY id").fetchall()
    errors = {}
    for row_id, topic, key, payload in rows:
        producer.produce(topic, payload, key=key,
                         on_delivery=lambda err, msg, rid=row_id: errors.__setitem__(rid, err))
    producer.flush()
    for row_id, *_ in rows:
        if row_id not in errors or errors[row_id] is not None:
            break
        with db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
'''

# Right too: waits for the report with poll() instead of flush().
RELAY_POLL = '''
def relay_once(db, producer):
    pending = db.execute("SELECT id, topic, key, payload FROM outbox WHERE sent = 0 "
                         "ORDER BY id").fetchall()
    for row_id, topic, key, payload in pending:
        reports = []
        producer.produce(topic, payload, key=key,
                         on_delivery=lambda err, msg: reports.append(err))
        while not reports:
            producer.poll(0.5)
        if reports[0] is not None:
            break
        with db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
'''

# Right too: the dedupe check reads the inbox inside the same transaction.
HANDLE_PAYMENT_SELECT = '''
import json

def handle_payment(db, message):
    event = json.loads(message.value())
    with db:
        seen = db.execute("SELECT 1 FROM inbox WHERE event_id = ?",
                          (event["event_id"],)).fetchone()
        if seen:
            return
        db.execute("INSERT INTO inbox (event_id) VALUES (?)", (event["event_id"],))
        db.execute("INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
                   (event["event_id"], event["order_id"], event["amount_cents"]))
'''

# ----- wrong -------------------------------------------------------------------------------

# place_order: the order and its outbox row in two transactions.
TWO_TRANSACTIONS = '''
import json

def place_order(db, order):
    event_id = "order-" + order["id"]
    with db:
        db.execute("INSERT INTO orders (id, customer, amount_cents) VALUES (?, ?, ?)",
                   (order["id"], order["customer"], order["amount_cents"]))
    with db:
        db.execute("INSERT INTO outbox (event_id, topic, key, payload) VALUES (?, ?, ?, ?)",
                   (event_id, "orders", order["id"],
                    json.dumps({"event_id": event_id, "order_id": order["id"]})))
'''

# place_order: saves the order and publishes the event straight to Kafka (a dual write).
DUAL_WRITE = '''
import json
from course_lib import Cluster

KAFKA = Cluster(brokers=1)
KAFKA.create_topic("orders", {"replication.factor": 1})

def place_order(db, order):
    with db:
        db.execute("INSERT INTO orders (id, customer, amount_cents) VALUES (?, ?, ?)",
                   (order["id"], order["customer"], order["amount_cents"]))
    producer = KAFKA.producer()
    producer.produce("orders", json.dumps({"event_id": "order-" + order["id"],
                                           "order_id": order["id"]}), key=order["id"])
    producer.flush()
'''

# relay_once: marks the row sent right after produce(), before the ack.
MARK_BEFORE_ACK = '''
def relay_once(db, producer):
    rows = db.execute("SELECT id, topic, key, payload FROM outbox WHERE sent = 0 "
                      "ORDER BY id").fetchall()
    for row_id, topic, key, payload in rows:
        producer.produce(topic, payload, key=key)
        with db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
    producer.flush()
'''

# relay_once: waits for the report but marks the row sent whatever it said.
MARK_REGARDLESS = '''
def relay_once(db, producer):
    rows = db.execute("SELECT id, topic, key, payload FROM outbox WHERE sent = 0 "
                      "ORDER BY id").fetchall()
    for row_id, topic, key, payload in rows:
        producer.produce(topic, payload, key=key)
        producer.flush()
        with db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
'''

# relay_once: skips a row that failed and goes on with the later ones.
SKIP_FAILED_ROW = '''
def relay_once(db, producer):
    rows = db.execute("SELECT id, topic, key, payload FROM outbox WHERE sent = 0 "
                      "ORDER BY id").fetchall()
    for row_id, topic, key, payload in rows:
        outcome = {}
        producer.produce(topic, payload, key=key,
                         on_delivery=lambda err, msg: outcome.update(err=err))
        producer.flush()
        if outcome.get("err") is not None:
            continue  # try this one again next time
        with db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
'''

# handle_payment: the inbox row is committed in its own transaction, before the effect.
INBOX_SEPARATE = '''
import json
import sqlite3

def handle_payment(db, message):
    event = json.loads(message.value())
    try:
        with db:
            db.execute("INSERT INTO inbox (event_id) VALUES (?)", (event["event_id"],))
    except sqlite3.IntegrityError:
        return
    with db:
        db.execute("INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
                   (event["event_id"], event["order_id"], event["amount_cents"]))
'''

# handle_payment: checks the inbox, applies the payment, records the event id later.
CHECK_THEN_ACT = '''
import json

def handle_payment(db, message):
    event = json.loads(message.value())
    if db.execute("SELECT 1 FROM inbox WHERE event_id = ?", (event["event_id"],)).fetchone():
        return
    with db:
        db.execute("INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
                   (event["event_id"], event["order_id"], event["amount_cents"]))
    with db:
        db.execute("INSERT INTO inbox (event_id) VALUES (?)", (event["event_id"],))
'''

# handle_payment: the inbox row and the payment in one transaction, but a redelivered
# message raises IntegrityError instead of being skipped: the consumer is stuck on it.
INBOX_UNGUARDED = '''
import json

def handle_payment(db, message):
    event = json.loads(message.value())
    with db:
        db.execute("INSERT INTO inbox (event_id) VALUES (?)", (event["event_id"],))
        db.execute("INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
                   (event["event_id"], event["order_id"], event["amount_cents"]))
'''

# handle_payment: no dedupe at all.
NO_DEDUPE = '''
import json

def handle_payment(db, message):
    event = json.loads(message.value())
    with db:
        db.execute("INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
                   (event["event_id"], event["order_id"], event["amount_cents"]))
'''

# ----- hostile -----------------------------------------------------------------------------

INFINITE_LOOP = '''
def place_order(db, order):
    while True:
        pass
'''

SYS_EXIT = '''
import sys

def place_order(db, order):
    sys.exit(0)
'''

OS_EXIT = '''
import os

def handle_payment(db, message):
    os._exit(3)
'''

PRINT_FLOOD = '''
def relay_once(db, producer):
    while True:
        print("spam " * 100)
'''

CALLS_FOREVER = '''
def relay_once(db, producer):
    while True:
        producer.poll(0)
'''

PATCH_GRADER = '''
import course_lib.grading.outbox as grader

def place_order(db, order):
    grader._judge = lambda *args, **kwargs: None
    grader.check_place_order = lambda *args, **kwargs: None
    grader._judge_orders = lambda *args, **kwargs: None
'''

STUB = {
    "place_order": "def place_order(db, order):\n    # YOUR CODE HERE\n"
                   "    raise NotImplementedError()",
    "relay_once": "def relay_once(db, producer):\n    # YOUR CODE HERE\n"
                  "    raise NotImplementedError()",
    "handle_payment": "def handle_payment(db, message):\n    # YOUR CODE HERE\n"
                      "    raise NotImplementedError()",
}

RIGHT = {"place_order": PLACE_ORDER, "relay_once": RELAY_ONCE,
         "handle_payment": HANDLE_PAYMENT}

# (name, the function it replaces, its source): each fails that function's check
WRONG = [
    ("two_transactions", "place_order", TWO_TRANSACTIONS),
    ("dual_write", "place_order", DUAL_WRITE),
    ("mark_before_ack", "relay_once", MARK_BEFORE_ACK),
    ("mark_regardless", "relay_once", MARK_REGARDLESS),
    ("skip_failed_row", "relay_once", SKIP_FAILED_ROW),
    ("inbox_separate", "handle_payment", INBOX_SEPARATE),
    ("check_then_act", "handle_payment", CHECK_THEN_ACT),
    ("inbox_unguarded", "handle_payment", INBOX_UNGUARDED),
    ("no_dedupe", "handle_payment", NO_DEDUPE),
]
