"""The grading sandbox: the wire carries plain data only, proxies offer only their methods.

The end-to-end behaviour of the sandbox (hangs, exits, floods, patching) is
exercised through the checks in ``test_grading_consumers.py``; here are the
parts a check is built from.
"""

from __future__ import annotations

import time

import pytest

from course_lib import KafkaError, KafkaException, Message, ProcessingError, TopicPartition
from course_lib.grading import sandbox
from course_lib.grading.sandbox import Limits, Outcome, Proxy, Sandbox, SourceFunction

# ----- the wire ---------------------------------------------------------------------------------


def test_the_wire_carries_messages_and_offsets_as_plain_data():
    message = Message(topic="events", partition=0, offset=3, key=None, value=b"m-003",
                      timestamp=(1, 1_011))
    value = [message, TopicPartition("events", 0, 4), {"asynchronous": False}, b"\x00", None]
    back = sandbox.decode(sandbox.encode(value))
    assert (back[0].topic(), back[0].offset(), back[0].value(), back[0].timestamp()) == (
        "events", 3, b"m-003", (1, 1_011))
    assert (back[1].topic, back[1].partition, back[1].offset) == ("events", 0, 4)
    assert back[2:] == [{"asynchronous": False}, b"\x00", None]


def test_the_wire_refuses_anything_else():
    with pytest.raises(TypeError, match="cannot be sent"):
        sandbox.encode(object())
    with pytest.raises(ValueError):
        sandbox.decode({"$pickle": "gASV"})


def test_errors_cross_the_wire_with_their_flags():
    error = KafkaError(KafkaError.REQUEST_TIMED_OUT, "offset commit timed out",
                       retriable=True)
    rebuilt = sandbox.rebuild_error(sandbox.encode_error(KafkaException(error)))
    assert isinstance(rebuilt, KafkaException)
    inner = rebuilt.args[0]
    assert (inner.code(), inner.str(), inner.retriable(), inner.fatal()) == (
        KafkaError.REQUEST_TIMED_OUT, "offset commit timed out", True, False)
    assert isinstance(sandbox.rebuild_error(sandbox.encode_error(ProcessingError("x"))),
                      ProcessingError)
    assert type(sandbox.rebuild_error(sandbox.encode_error(OSError("x")))) is RuntimeError


class Recorder:
    """A gate that answers every call with its own description, and a case harness."""

    def __init__(self, cases: list) -> None:
        self.calls: list = []
        self.cases = list(cases)
        self.answers: list = []

    def call(self, target, method, args, kwargs):
        self.calls.append((target, method, args, kwargs))
        if target == "harness" and method == "case":
            return self.cases.pop(0) if self.cases else None
        if target == "harness":
            self.answers.append((method, *args))
            return None
        return f"{target}.{method}{args}"


def test_a_proxy_forwards_only_its_methods():
    gate = Recorder([])
    client = Proxy(gate.call, "producer", frozenset({"flush"}), "<Producer>")
    assert client.flush(1.5) == "producer.flush(1.5,)"
    assert repr(client) == "<Producer>"
    with pytest.raises(AttributeError, match="no method 'produce'; it offers flush"):
        client.produce("t")
    with pytest.raises(AttributeError, match="read-only"):
        client.flush = None
    with pytest.raises(TypeError, match="not callable"):
        client()
    process = Proxy(gate.call, "process", frozenset({"__call__"}), "<process>")
    assert process("m") == "process.__call__('m',)"


def test_each_case_is_answered_in_the_child():
    def halve(n):
        if n % 2:
            raise ValueError(f"{n} is odd")
        return n // 2

    gate = Recorder([[[4], {}], [[3], {}], [[10], {}]])
    with Sandbox(halve, Limits(5.0), sandbox.answer_each_case()) as box:
        outcome = box.run(gate, deadline=time.monotonic() + 30)
    assert outcome == Outcome("returned")
    assert gate.answers == [("answer", 2), ("raised", "ValueError", "3 is odd"), ("answer", 5)]


def test_a_source_function_is_defined_only_in_the_child():
    source = "def double(n):\n    return 2 * n\n"
    answer = SourceFunction(source, "double")
    with pytest.raises(RuntimeError, match="only inside the sandbox"):
        answer(1)
    gate = Recorder([[[21], {}]])
    with Sandbox(answer, Limits(5.0), sandbox.answer_each_case()) as box:
        box.run(gate, deadline=time.monotonic() + 30)
    assert gate.answers == [("answer", 42)]


def test_a_child_that_hangs_is_stopped_at_the_deadline():
    def spin(_n):
        while True:
            pass



    gate = Recorder([[[1], {}]])
    with Sandbox(spin, Limits(1.0), sandbox.answer_each_case()) as box:
        outcome = box.run(gate, deadline=time.monotonic() + 0.5)
    assert outcome.kind == "hang"


def test_a_failing_answer_cell_costs_only_what_it_should_have_defined():
    cells = ["def first(n):\n    return n + 1\n", "import sys\nsys.exit('bye')\n",
             "def third(n):\n    return n + 3\n"]
    for name, expected in (("first", ("answer", 2)), ("third", ("answer", 4))):
        gate = Recorder([[[1], {}]])
        with Sandbox(SourceFunction(cells, name), Limits(5.0),
                     sandbox.answer_each_case()) as box:
            box.run(gate, deadline=time.monotonic() + 30)
        assert gate.answers == [expected]
    gate = Recorder([[[1], {}]])
    with Sandbox(SourceFunction(cells, "second"), Limits(5.0),
                 sandbox.answer_each_case()) as box:
        outcome = box.run(gate, deadline=time.monotonic() + 30)
    assert outcome.kind == "exit" and "bye" in outcome.detail
