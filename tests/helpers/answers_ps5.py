"""A corpus of ps5 answers (``choose_config``), right, wrong and hostile, as answer-cell SOURCE.

Each entry is the whole answer cell a student could hand in, so the same text
serves the in-kernel checks (:func:`load` defines it here) and the trusted pass
(the tests paste it into a submission notebook). The wrong ones are the
plausible mistakes the assignment must catch, each breaking one guarantee;
the hostile ones try to hang, exit, flood or patch the grader.
"""

from __future__ import annotations

from collections.abc import Callable

RIGHT = '''
def choose_config(failures_to_tolerate, brokers):
    f = failures_to_tolerate
    if brokers < 2 * f + 1:
        raise ValueError(f"{brokers} brokers cannot keep acknowledged writes through {f} "
                         f"failures and stay writable: that needs {2 * f + 1}")
    return {
        "replication.factor": 2 * f + 1,
        "min.insync.replicas": f + 1,
        "acks": "all",
        "unclean.leader.election.enable": False,
        "enable.idempotence": True,
    }
'''

# Right too: every broker holds a replica (more copies than needed), idempotence off.
RIGHT_ALL_BROKERS = '''
def choose_config(failures_to_tolerate, brokers):
    if brokers < 2 * failures_to_tolerate + 1:
        raise ValueError("too few brokers for both durability and availability")
    return {"replication.factor": brokers, "min.insync.replicas": failures_to_tolerate + 1,
            "acks": "all", "unclean.leader.election.enable": False,
            "enable.idempotence": False}
'''

_TEMPLATE = '''
def choose_config(failures_to_tolerate, brokers):
    f = failures_to_tolerate
    if brokers < {need}:
        raise ValueError("not enough brokers")
    return {{
        "replication.factor": {rf},
        "min.insync.replicas": {mis},
        "acks": {acks},
        "unclean.leader.election.enable": {unclean},
        "enable.idempotence": {idempotence},
    }}
'''


def _wrong(rf: str = "2 * f + 1", mis: str = "f + 1", acks: str = '"all"',
           unclean: str = "False", idempotence: str = "True", need: str = "2 * f + 1") -> str:
    return _TEMPLATE.format(rf=rf, mis=mis, acks=acks, unclean=unclean,
                            idempotence=idempotence, need=need)


# (source, the check it must fail) — each keeps the points of the other guarantees.
WRONG = {
    # The leader acknowledges alone: durability lost when it dies before followers copy.
    "acks_1": _wrong(acks='"1"', idempotence="False"),
    # acks=all waits for the ISR only; with the ISR shrunk to the leader, one copy is acked.
    "min_insync_1": _wrong(mis="1"),
    # Durable, but a single broker down leaves fewer in-sync replicas than required.
    "min_insync_equals_rf": _wrong(mis="2 * f + 1"),
    # A stale replica may lead when the in-sync ones are down: acknowledged writes cut.
    "unclean_election_on": _wrong(unclean="True"),
    # A string where Kafka wants a bool: the config is rejected, so nothing works.
    "string_false": _wrong(unclean='"false"'),
    # Enough copies to survive f failures, none to spare: with f down, writes are refused;
    # and it never refuses too few brokers (it needs only f + 1).
    "rf_f_plus_1": _wrong(rf="f + 1", need="f + 1"),
}

NOT_IMPLEMENTED = '''
def choose_config(failures_to_tolerate, brokers):
    # YOUR CODE HERE
    raise NotImplementedError()
'''

HOSTILE = {
    "infinite_loop": '''
def choose_config(failures_to_tolerate, brokers):
    while True:
        pass
''',
    "sys_exit": '''
import sys

def choose_config(failures_to_tolerate, brokers):
    sys.exit(0)
''',
    "os_exit": '''
import os

def choose_config(failures_to_tolerate, brokers):
    os._exit(3)
''',
    "print_flood": '''
def choose_config(failures_to_tolerate, brokers):
    while True:
        print("spam " * 100)
''',
    # Patches the grader in its own process, then hands in an unsafe config.
    "patch_grader": '''
import course_lib.checker
import course_lib.grading.durability as durability

def choose_config(failures_to_tolerate, brokers):
    durability.check_durability = lambda *args, **kwargs: None
    durability._play = lambda *args, **kwargs: None
    durability._respects = lambda *args, **kwargs: False
    course_lib.checker.check = lambda *args, **kwargs: None
    return {"replication.factor": 1, "min.insync.replicas": 1, "acks": "1",
            "unclean.leader.election.enable": True, "enable.idempotence": False}
''',
    # Not plain data: a set cannot cross the wire.
    "returns_a_set": '''
def choose_config(failures_to_tolerate, brokers):
    return {"acks", "all"}
''',
}


def load(source: str) -> Callable:
    """Define the answer cell here, as the notebook kernel would, and return choose_config."""
    namespace: dict = {"__name__": "__answer__"}
    exec(compile(source, "<answer cell>", "exec"), namespace)  # noqa: S102 - our corpus
    return namespace["choose_config"]
