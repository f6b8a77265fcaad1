"""A corpus of ps4 answers (``process_transactionally`` + ``CONSUMER_ISOLATION``), as SOURCE.

Each answer is the text of the notebook's two answer cells, the way a student
writes them: the ``consumer_isolation`` cell and the ``process_transactionally``
cell. The grader reads ``CONSUMER_ISOLATION`` from the function's own globals,
so an answer must be a program of its own, not a function of this module:
:func:`load` runs one (after the notebook's setup imports) and returns its
function. The wrong ones are realistic mistakes, each breaking one guarantee;
``BREAKS`` says which checks each must fail (every other check it must pass).
The hostile ones hang, exit, flood or patch the grader.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

# The notebook's setup cell (the trusted pass runs it before the answer cells).
SETUP = ("from course_lib import OFFSET_BEGINNING, OFFSET_INVALID, KafkaError, KafkaException, "
         "TopicPartition\n")

COMMITTED = 'CONSUMER_ISOLATION = "read_committed"\n'
UNCOMMITTED = 'CONSUMER_ISOLATION = "read_uncommitted"\n'

_REWIND = """            for tp in consumer.committed(consumer.assignment()):
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
"""


def _loop(send_offsets: str = "consumer.position(consumer.assignment())",
          on_error: str = "", after_commit: str = "", start: str = "producer.init_transactions()",
          per_message: str = "") -> str:
    """The reference loop with one part swapped for a mistake."""
    on_error = on_error or ("            if not error.args[0].txn_requires_abort():\n"
                            "                raise\n"
                            "            producer.abort_transaction()\n" + _REWIND)
    offsets = ("            producer.send_offsets_to_transaction(\n"
               f"                {send_offsets}, consumer.consumer_group_metadata())\n"
               if send_offsets else "")
    return (
        "def process_transactionally(consumer, producer, transform):\n"
        + (f"    {start}\n" if start else "")
        + "    while (msg := consumer.poll(1.0)) is not None:\n"
        + (f"        {per_message}\n" if per_message else "")
        + "        producer.begin_transaction()\n"
        "        try:\n"
        "            for topic, key, value in transform(msg):\n"
        "                producer.produce(topic, value, key=key)\n"
        + offsets
        + "            producer.commit_transaction()\n"
        "        except KafkaException as error:\n"
        + on_error
        + "            continue\n"
        + (f"        {after_commit}\n" if after_commit else "")
    )


REFERENCE = _loop()

RIGHT = {
    # The solution notebook's answer.
    "reference": (COMMITTED, REFERENCE),
    # Right: the next offset spelled out (msg.offset() + 1) instead of position().
    "explicit_next_offset": (COMMITTED, _loop(
        send_offsets="[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)]")),
    # Right: no abort-and-rewind; any error ends the app, and the restarted instance's
    # init_transactions() aborts the open transaction and resumes at the committed offsets.
    "restart_on_any_error": (COMMITTED, """
def process_transactionally(consumer, producer, transform):
    producer.init_transactions()
    while (msg := consumer.poll(1.0)) is not None:
        producer.begin_transaction()
        for topic, key, value in transform(msg):
            producer.produce(topic, value, key=key)
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata())
        producer.commit_transaction()
"""),
}

WRONG = {
    # Offsets committed by the consumer after the transaction, not inside it: a crash
    # between the two repeats a message whose output is already committed.
    "commit_outside_transaction": (COMMITTED, _loop(
        send_offsets="", after_commit="consumer.commit(message=msg, asynchronous=False)")),
    # Kafka's default isolation: the loop copies records of aborted upstream transactions.
    "read_uncommitted": (UNCOMMITTED, REFERENCE),
    # Aborts on an abortable error but does not rewind: the next poll() skips the message.
    "abort_without_rewind": (COMMITTED, _loop(on_error=(
        "            if not error.args[0].txn_requires_abort():\n"
        "                raise\n"
        "            producer.abort_transaction()\n"))),
    # Sends msg.offset(), the message just processed, instead of the next offset.
    "offset_not_next": (COMMITTED, _loop(
        send_offsets="[TopicPartition(msg.topic(), msg.partition(), msg.offset())]")),
    # Treats every KafkaException as abortable, so a fenced zombie keeps polling.
    "swallow_fenced": (COMMITTED, _loop(on_error=(
        "            try:\n"
        "                producer.abort_transaction()\n"
        "            except KafkaException:\n"
        "                pass  # nothing to abort\n" + _REWIND))),
    # init_transactions() per message: Kafka refuses the second call (_STATE).
    "init_per_message": (COMMITTED, _loop(start="", per_message="producer.init_transactions()")),
    # The loop is right but the isolation cell is still the stub: the constant is never set,
    # so the consumer gets Kafka's default, read_uncommitted.
    "isolation_left_unset": ("# YOUR CODE HERE\nraise NotImplementedError()", REFERENCE),
}

ALL_CHECKS = ("no_duplicates", "no_loss", "zombie_fenced", "isolation")
BREAKS = {
    "commit_outside_transaction": {"no_duplicates"},
    "read_uncommitted": {"isolation"},
    "abort_without_rewind": {"no_loss"},
    "offset_not_next": {"no_duplicates", "no_loss"},
    "swallow_fenced": {"zombie_fenced"},
    "init_per_message": set(ALL_CHECKS),
    "isolation_left_unset": {"isolation"},
}

HOSTILE = {
    "infinite_loop": (COMMITTED, """
def process_transactionally(consumer, producer, transform):
    producer.init_transactions()
    while True:
        pass
"""),
    "calls_sys_exit": (COMMITTED, """
import sys

def process_transactionally(consumer, producer, transform):
    producer.init_transactions()
    sys.exit(0)
"""),
    "calls_os_exit": (COMMITTED, """
import os

def process_transactionally(consumer, producer, transform):
    producer.init_transactions()
    os._exit(3)
"""),
    "print_flood": (COMMITTED, """
def process_transactionally(consumer, producer, transform):
    while True:
        print("spam " * 100)
"""),
    "patch_grader": (COMMITTED, """
def process_transactionally(consumer, producer, transform):
    import course_lib.checker
    import course_lib.grading.transactions as transactions

    transactions._judge = lambda *args, **kwargs: None
    transactions.check_no_loss = lambda *args, **kwargs: None
    course_lib.checker.check = lambda *args, **kwargs: None
"""),
}

NOT_IMPLEMENTED = ('# YOUR CODE HERE\nraise NotImplementedError()',
                   'def process_transactionally(consumer, producer, transform):\n'
                   '    # YOUR CODE HERE\n    raise NotImplementedError()')

CORPUS = RIGHT | WRONG | HOSTILE


def load(name: str) -> Callable:
    """The answer's function, defined in a fresh namespace holding its CONSUMER_ISOLATION.

    The setup and the two answer cells run one after the other, as in a
    kernel: a cell that raises (a stub left in place) does not stop the next.
    """
    namespace: dict = {"__name__": f"answer_{name}"}
    for number, cell in enumerate((SETUP, *CORPUS[name])):
        with suppress(NotImplementedError):
            exec(compile(cell, f"<answer {name} cell {number}>", "exec"), namespace)  # noqa: S102
    return namespace["process_transactionally"]
