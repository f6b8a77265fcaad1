"""Delivery Semantics Lab: Kafka's delivery guarantees on a deterministic toy cluster.

Learners import Kafka's types from here as they would from ``confluent_kafka``
(they *are* confluent_kafka's types), and the simulation's entry points::

    from course_lib import Cluster, TopicPartition, KafkaError, KafkaException

Importing the package starts nothing and changes nothing global. A failed
autograder check prints a ``course_lib.replay("…")`` line that redraws the run.
"""

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from course_lib.checker import Report, check
from course_lib.cluster import Cluster
from course_lib.errors import ConfigException
from course_lib.faults import Crash, FaultPlan, ProcessingError

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "OFFSET_INVALID",
    "Cluster",
    "ConfigException",
    "Crash",
    "FaultPlan",
    "KafkaError",
    "KafkaException",
    "Message",
    "ProcessingError",
    "Report",
    "TopicPartition",
    "check",
    "replay",
]


def __getattr__(name: str):
    """``course_lib.replay``, loaded on first use: grading pulls in multiprocessing."""
    if name == "replay":
        from course_lib.grading import replay

        return replay
    raise AttributeError(f"module 'course_lib' has no attribute {name!r}")
