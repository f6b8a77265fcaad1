"""A corpus of ps1 answers, right, wrong and hostile, that the grading tests attack.

Each is written as a student would write it in the notebook, importing Kafka's
types from ``course_lib``. The wrong ones are the plausible mistakes DESIGN §5
asks the autograder to catch; the hostile ones try to hang, exit, flood or
patch the grader.
"""

from __future__ import annotations

import os
import sys

from course_lib import ProcessingError, TopicPartition


def consume_at_most_once(consumer, process):
    """Right: commit synchronously, then process."""
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg, asynchronous=False)
        process(msg)


def consume_at_least_once(consumer, process):
    """Right: process, then commit synchronously."""
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)
        consumer.commit(message=msg, asynchronous=False)


def retry_processing(consumer, process):
    """Right for at-least-once: retry a failed process(msg) before committing."""
    while (msg := consumer.poll(1.0)) is not None:
        for attempt in range(3):
            try:
                process(msg)
                break
            except ProcessingError:
                if attempt == 2:
                    raise
        consumer.commit(message=msg, asynchronous=False)


def commit_before_process(consumer, process):
    """Wrong for at-least-once: a crash after the commit skips the message."""
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg, asynchronous=False)
        process(msg)


def process_then_commit(consumer, process):
    """Wrong for at-most-once: a crash before the commit repeats the message."""
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)
        consumer.commit(message=msg, asynchronous=False)


def commit_offset_first(consumer, process):
    """Wrong: commits msg.offset() (not + 1) before processing: the restart rereads it."""
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset())],
                        asynchronous=False)
        process(msg)


def commit_offset_after(consumer, process):
    """Wrong: process, then commit msg.offset() (not + 1): the last message stays uncommitted."""
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)
        consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset())],
                        asynchronous=False)


def swallow_processing_error(consumer, process):
    """Wrong: a failed process(msg) is ignored and the message committed: lost."""
    while (msg := consumer.poll(1.0)) is not None:
        try:  # noqa: SIM105 - written the way students write it
            process(msg)
        except ProcessingError:
            pass
        consumer.commit(message=msg, asynchronous=False)


def never_commit(consumer, process):
    """Wrong for at-least-once: processes everything, records no progress."""
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)


def async_commit_first(consumer, process):
    """Wrong for at-most-once: an asynchronous commit may still be in flight at a crash."""
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg)
        process(msg)


def do_nothing(consumer, process):
    """Wrong: reads nothing (at-most-once in name only)."""


def not_implemented(consumer, process):
    """The untouched stub."""
    raise NotImplementedError()


# ----- hostile -------------------------------------------------------------------------------


def infinite_loop(consumer, process):
    """Spins forever without calling the consumer."""
    while True:
        pass


def calls_forever(consumer, process):
    """Forgets to stop when poll() returns None, and swallows even crashes."""
    while True:
        try:
            msg = consumer.poll(0.1)
            if msg is not None:
                process(msg)
                consumer.commit(message=msg, asynchronous=False)
        except BaseException:  # that is the mistake
            pass


def calls_sys_exit(consumer, process):
    """Processes one message, then exits the interpreter."""
    msg = consumer.poll(1.0)
    process(msg)
    sys.exit(0)


def calls_os_exit(consumer, process):
    """Processes one message, then leaves without cleanup."""
    msg = consumer.poll(1.0)
    process(msg)
    os._exit(0)


def print_flood(consumer, process):
    """Prints without end."""
    while True:
        print("spam " * 100)


def patch_grader(consumer, process):
    """Patches the grader from inside the answer, then does no work."""
    import course_lib.checker
    import course_lib.grading as grading

    grading.check_at_least_once = lambda *args, **kwargs: None
    grading.check_at_most_once = lambda *args, **kwargs: None
    grading.consumers._judge = lambda *args, **kwargs: None
    course_lib.checker.check = lambda *args, **kwargs: None


_SEEN: set = set()


def dedupe_in_memory(consumer, process):
    """Wrong for at-most-once: process-then-commit, deduplicated in a set that dies with the app."""
    while (msg := consumer.poll(1.0)) is not None:
        if msg.offset() not in _SEEN:
            _SEEN.add(msg.offset())
            process(msg)
        consumer.commit(message=msg, asynchronous=False)


def except_exception_around_commit(consumer, process):
    """Right for at-least-once: ``except Exception`` cannot swallow the injected crash."""
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)
        try:  # noqa: SIM105 - written the way students write it
            consumer.commit(message=msg, asynchronous=False)
        except Exception:  # a failed commit is retried by the next one
            pass


def memory_hog(consumer, process):
    """Asks for far more memory than the sandbox allows."""
    hoard = bytearray(8 * 2**30)
    process(hoard)
