"""A corpus of ps2 answers, right, wrong and hostile, that the grading tests attack.

Each answer is SOURCE, as a student would type it in the notebook's answer
cells (importing Kafka's types from ``course_lib``), so the same text serves
the in-kernel checks (:func:`load`) and the trusted pass (a submission notebook
with these cells). The wrong ones are the plausible mistakes each guarantee of
ps2 must catch; the hostile ones try to hang, exit, flood or patch the grader.
"""

from __future__ import annotations

from collections.abc import Callable

# ----- send_with_retries ----------------------------------------------------------------------

RETRIES_RIGHT = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    deadline = clock.now_ms() + delivery_timeout_ms
    attempt = 0
    while True:
        try:
            return send_once(record)
        except KafkaException as exc:
            attempt += 1
            if not exc.args[0].retriable() or attempt > retries:
                raise
            if clock.now_ms() + backoff_ms >= deadline:
                raise
            clock.sleep(backoff_ms)
'''

RETRIES_RIGHT_EXPONENTIAL = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    start = clock.now_ms()
    last = None
    for attempt in range(retries + 1):
        if attempt:
            clock.sleep(backoff_ms * 2 ** (attempt - 1))
            if clock.now_ms() - start >= delivery_timeout_ms:
                break
        try:
            return send_once(record)
        except KafkaException as exc:
            last = exc
            if not exc.args[0].retriable():
                raise
    raise last
'''

RETRIES_FATAL_RETRIED = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    deadline = clock.now_ms() + delivery_timeout_ms
    attempt = 0
    while True:
        try:
            return send_once(record)
        except KafkaException:
            attempt += 1  # every error is retried, even MSG_SIZE_TOO_LARGE
            if attempt > retries or clock.now_ms() + backoff_ms >= deadline:
                raise
            clock.sleep(backoff_ms)
'''

RETRIES_IGNORES_TIMEOUT = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    for attempt in range(retries + 1):
        try:
            return send_once(record)
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == retries:
                raise
            clock.sleep(backoff_ms)
'''

RETRIES_FOREVER = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    deadline = clock.now_ms() + delivery_timeout_ms
    while True:  # `retries` is ignored: only the delivery timeout stops it
        try:
            return send_once(record)
        except KafkaException as exc:
            if not exc.args[0].retriable() or clock.now_ms() + backoff_ms >= deadline:
                raise
            clock.sleep(backoff_ms)
'''

RETRIES_NO_BACKOFF = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    deadline = clock.now_ms() + delivery_timeout_ms
    for attempt in range(retries + 1):
        try:
            return send_once(record)
        except KafkaException as exc:
            if (not exc.args[0].retriable() or attempt == retries
                    or clock.now_ms() >= deadline):
                raise
'''

RETRIES_SWALLOWS = '''
from course_lib import KafkaException


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    deadline = clock.now_ms() + delivery_timeout_ms
    for attempt in range(retries + 1):
        try:
            return send_once(record)
        except KafkaException as exc:
            if not exc.args[0].retriable():
                return None  # give up quietly
            if clock.now_ms() + backoff_ms >= deadline:
                return None
            clock.sleep(backoff_ms)
    return None
'''

RETRIES_NEVER = '''
def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    return send_once(record)  # one attempt: a lost ack is reported as a failure
'''

RETRIES_STUB = '''
def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    raise NotImplementedError()
'''

# ----- IdempotentSender -----------------------------------------------------------------------

SENDER_RIGHT = '''
from course_lib import KafkaException


class IdempotentSender:
    def __init__(self, send_once, producer_id, epoch=0):
        self.send_once = send_once
        self.producer_id = producer_id
        self.epoch = epoch
        self.next_seq = {}

    def send(self, partition, value):
        seq = self.next_seq.get(partition, 0)
        batch = {"producer_id": self.producer_id, "epoch": self.epoch,
                 "partition": partition, "seq": seq, "value": value}
        while True:
            try:
                ack = self.send_once(batch)
            except KafkaException as exc:
                if exc.args[0].retriable():
                    continue
                raise
            self.next_seq[partition] = seq + 1
            return ack
'''

SENDER_NEW_SEQ_ON_RETRY = '''
from course_lib import KafkaException


class IdempotentSender:
    def __init__(self, send_once, producer_id, epoch=0):
        self.send_once = send_once
        self.producer_id = producer_id
        self.epoch = epoch
        self.next_seq = {}

    def send(self, partition, value):
        while True:
            seq = self.next_seq.get(partition, 0)
            self.next_seq[partition] = seq + 1  # a fresh number for every attempt
            try:
                return self.send_once({"producer_id": self.producer_id, "epoch": self.epoch,
                                       "partition": partition, "seq": seq, "value": value})
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
'''

SENDER_GLOBAL_SEQ = '''
from course_lib import KafkaException


class IdempotentSender:
    def __init__(self, send_once, producer_id, epoch=0):
        self.send_once = send_once
        self.producer_id = producer_id
        self.epoch = epoch
        self.seq = 0  # one counter for all partitions

    def send(self, partition, value):
        batch = {"producer_id": self.producer_id, "epoch": self.epoch,
                 "partition": partition, "seq": self.seq, "value": value}
        while True:
            try:
                ack = self.send_once(batch)
            except KafkaException as exc:
                if exc.args[0].retriable():
                    continue
                raise
            self.seq += 1
            return ack
'''

SENDER_NO_RETRY = '''
class IdempotentSender:
    def __init__(self, send_once, producer_id, epoch=0):
        self.send_once = send_once
        self.producer_id = producer_id
        self.epoch = epoch
        self.next_seq = {}

    def send(self, partition, value):
        seq = self.next_seq.get(partition, 0)
        self.next_seq[partition] = seq + 1
        return self.send_once({"producer_id": self.producer_id, "epoch": self.epoch,
                               "partition": partition, "seq": seq, "value": value})
'''

SENDER_STUB = '''
class IdempotentSender:
    def __init__(self, send_once, producer_id, epoch=0):
        raise NotImplementedError()

    def send(self, partition, value):
        raise NotImplementedError()
'''

# ----- check_sequence -------------------------------------------------------------------------

SEQUENCE_RIGHT = '''
def check_sequence(state, batch):
    key = (batch["producer_id"], batch["partition"])
    epoch, seq = batch["epoch"], batch["seq"]
    if key not in state or epoch > state[key][0]:
        if seq != 0:
            return "out_of_order"
    elif epoch < state[key][0]:
        return "fenced"
    elif seq <= state[key][1]:
        return "duplicate"
    elif seq > state[key][1] + 1:
        return "out_of_order"
    state[key] = (epoch, seq)
    return "ok"
'''

SEQUENCE_GAP_OK = '''
def check_sequence(state, batch):
    key = (batch["producer_id"], batch["partition"])
    epoch, seq = batch["epoch"], batch["seq"]
    if key not in state or epoch > state[key][0]:
        if seq != 0:
            return "out_of_order"
    elif epoch < state[key][0]:
        return "fenced"
    elif seq <= state[key][1]:
        return "duplicate"
    state[key] = (epoch, seq)  # any newer sequence is accepted, gaps too
    return "ok"
'''

SEQUENCE_UPDATES_ON_DUPLICATE = '''
def check_sequence(state, batch):
    key = (batch["producer_id"], batch["partition"])
    epoch, seq = batch["epoch"], batch["seq"]
    if key not in state or epoch > state[key][0]:
        if seq != 0:
            return "out_of_order"
        state[key] = (epoch, seq)
        return "ok"
    if epoch < state[key][0]:
        return "fenced"
    last = state[key][1]
    state[key] = (epoch, seq)  # remembered before deciding
    if seq <= last:
        return "duplicate"
    if seq > last + 1:
        return "out_of_order"
    return "ok"
'''

SEQUENCE_NO_FENCING = '''
def check_sequence(state, batch):
    key = (batch["producer_id"], batch["partition"])
    epoch, seq = batch["epoch"], batch["seq"]
    if key not in state or epoch != state[key][0]:  # an older epoch is treated as new
        if seq != 0:
            return "out_of_order"
    elif seq <= state[key][1]:
        return "duplicate"
    elif seq > state[key][1] + 1:
        return "out_of_order"
    state[key] = (epoch, seq)
    return "ok"
'''

SEQUENCE_STUB = '''
def check_sequence(state, batch):
    raise NotImplementedError()
'''

# ----- hostile (each written as send_with_retries) --------------------------------------------

HOSTILE_INFINITE_LOOP = '''
def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    while True:
        pass
'''

HOSTILE_SYS_EXIT = '''
import sys


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    send_once(record)
    sys.exit(0)
'''

HOSTILE_OS_EXIT = '''
import os


def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    send_once(record)
    os._exit(3)
'''

HOSTILE_FLOOD = '''
def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    while True:
        print("spam " * 100)
'''

HOSTILE_PATCH_GRADER = '''
def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    import course_lib.grading.retries as retries_module

    retries_module._RetriesGate.verdict = lambda self, outcome: None
    retries_module.check_send_with_retries = lambda *args, **kwargs: None
    return {"topic": "events", "partition": 0, "offset": 0}  # never sent
'''

HOSTILE_SLEEP_FOREVER = '''
def send_with_retries(send_once, record, *, retries, backoff_ms, delivery_timeout_ms, clock):
    while True:
        clock.sleep(1)
'''


def load(source: str, name: str) -> Callable:
    """The function or class ``name`` defined by an answer's source, as a notebook would."""
    namespace: dict = {"__name__": "__answer__"}
    exec(compile(source, f"<answer {name}>", "exec"), namespace)  # noqa: S102 - our corpus
    return namespace[name]
