"""How big and how often: the full benchmark run and the quick smoke run.

Sizes live in one frozen record so that the full run, ``--quick`` and the
tests' tiny runs differ only in data, never in code paths: whatever the smoke
test exercises is exactly what ``make bench`` measures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Settings:
    """Sizes, repetitions and time budgets of one benchmark run."""

    repeats: int = 5  # timed repetitions of each measurement
    warmup: int = 1  # untimed runs before them
    null_loop_events: int = 200_000  # events in the bare event-loop baselines
    producers: int = 4  # group 1: producers writing to the one partition
    messages_per_producer: int = 500  # group 1: records each producer sends
    loss_fraction: float = 0.05  # group 1: share of produce requests/responses the link drops
    scenario_messages: int = 100  # group 2: messages in one at-least-once run
    scenario_repeats: int = 30  # group 2: runs are short, so take more of them
    scaling_sizes: tuple[int, ...] = (100, 1_000, 10_000, 100_000)  # group 6
    run_budget_s: float = 60.0  # group 6: skip a size whose one run is estimated longer
    size_budget_s: float = 60.0  # group 6: cap on warm-up + repetitions at one size
    notebook_repeats: int = 3  # group 5: executions of each notebook (kernel start included)
    grading_repeats: int = 3  # group 3: autograde runs of each reference solution and the floor
    grading_assignments: tuple[str, ...] = ()  # group 3: which solutions; () means every one
    widget_repeats: int = 30  # group 4: config-panel callbacks timed
    seed: int = 0

    def as_dict(self) -> dict:
        """Plain data for the JSON file, so a result says how it was measured."""
        data = asdict(self)
        data["scaling_sizes"] = list(self.scaling_sizes)
        data["grading_assignments"] = list(self.grading_assignments)
        return data


FULL = Settings()

QUICK = Settings(repeats=1, warmup=0, null_loop_events=2_000, producers=2,
                 messages_per_producer=20, scenario_messages=20, scenario_repeats=2,
                 scaling_sizes=(20, 200), run_budget_s=5.0, size_budget_s=5.0,
                 notebook_repeats=1, grading_repeats=1, widget_repeats=3,
                 grading_assignments=("ps1_commit_ordering",))
