"""A tiny smoke run of every benchmark function, so the benchmarks cannot rot unnoticed.

These tests check structure and sanity (work was done, counts agree, ratios are
finite numbers, missing groups say why) and never wall-clock thresholds: speed
is what ``make bench`` reports, not what the suite asserts.
"""

from __future__ import annotations

import json
import math

import nbformat
import pytest

from benchmarks.__main__ import main
from benchmarks.at_least_once import run_at_least_once
from benchmarks.course_partition import run_course_lib
from benchmarks.event_throughput import measure_event_throughput
from benchmarks.notebooks import measure_notebooks
from benchmarks.null_loop import measure_null_loops, simpy_null_loop, world_null_loop
from benchmarks.report import format_table
from benchmarks.scaling import measure_scaling, repetitions
from benchmarks.scenario_throughput import measure_scenario_throughput
from benchmarks.settings import QUICK, Settings
from benchmarks.simpy_partition import run_simpy
from benchmarks.timing import Timing, measure, rate, same_every_time
from benchmarks.transactional import run_transactional

TINY = Settings(repeats=2, warmup=1, null_loop_events=500, producers=2,
                messages_per_producer=10, scenario_messages=10, scenario_repeats=2,
                scaling_sizes=(10, 30), run_budget_s=30.0, size_budget_s=30.0,
                notebook_repeats=1)


def finite_positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def baseline() -> dict:
    return measure_null_loops(TINY)


def test_measure_times_every_repeat_after_the_warmup():
    calls = []
    timing, results = measure(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert len(calls) == 5 and results == [3, 4, 5]
    summary = timing.as_dict()
    assert summary["repeats"] == 3 and summary["warmup"] == 2
    assert summary["min_s"] <= summary["q1_s"] <= summary["median_s"] <= summary["q3_s"]
    assert summary["q3_s"] <= summary["max_s"]
    assert set(rate(10, Timing((0.5, 1.0), 0), "runs")) == {"runs_per_s", "runs_per_s_min",
                                                             "runs_per_s_max"}


def test_a_run_that_changes_between_repetitions_is_an_error():
    assert same_every_time([1, 1], "count") == 1
    with pytest.raises(AssertionError, match="differed"):
        same_every_time([1, 2], "count")


def test_null_loops_run_exactly_the_events_asked_for(baseline):
    assert world_null_loop(100) == 100
    assert simpy_null_loop(100) == 100
    assert finite_positive(baseline["world"]["events_per_s"])
    assert finite_positive(baseline["ratio_world_to_simpy"])


def test_lossy_link_drops_messages_yet_every_record_is_acked():
    run = run_course_lib(producers=2, messages_per_producer=25, loss_fraction=0.2)
    assert run.dropped > 0 and run.acked == 50 and run.failed == 0
    model = run_simpy(producers=2, loss_fraction=0.2, events=3_000)
    assert model.dropped > 0 and model.acked > 0 and model.events == 3_000


def test_event_throughput_compares_the_same_number_of_events(baseline):
    group = measure_event_throughput(TINY, baseline)
    course, simpy = group["course_lib"], group["simpy"]
    assert course["events"] == simpy["events"] > 0
    assert course["acked"] == TINY.producers * TINY.messages_per_producer
    assert simpy["acked"] > 0
    assert finite_positive(group["ratio_events_per_s_course_lib_to_simpy"])
    assert finite_positive(group["ratio_acked_per_s_course_lib_to_simpy"])
    assert "SimPy" in group["workload"] and "course_lib" in group["workload"]


def test_the_timed_scenario_is_at_least_once_with_one_crash():
    run = run_at_least_once(20)
    assert (run.restarts, run.lost, run.duplicated, run.delivered) == (1, 0, 1, 20)
    assert run.guarantee == "at-least-once" and run.events > 0


def test_the_timed_transactional_scenario_is_exactly_once_after_one_abort():
    run = run_transactional(40)
    assert (run.producer_restarts, run.aborted_transactions) == (1, 1)
    assert (run.lost, run.duplicated, run.delivered) == (0, 0, 40)
    assert run.guarantee == "exactly-once" and run.events > 0


def test_scenario_throughput_reports_runs_per_s_for_both_scenarios(baseline):
    group = measure_scenario_throughput(TINY, baseline)
    for part in (group["at_least_once"], group["transactional"]):
        assert part["status"] == "measured"
        assert finite_positive(part["runs_per_s"])
        assert finite_positive(part["cost_in_null_events"])


def test_scaling_measures_each_size_with_its_per_message_cost(baseline):
    group = measure_scaling(TINY, baseline)
    first, second = group["sizes"]
    assert [first["messages"], second["messages"]] == [10, 30]
    assert first["status"] == second["status"] == "measured"
    assert finite_positive(second["per_message_us"])
    assert finite_positive(second["per_message_in_null_events"])
    assert finite_positive(second["time_ratio_to_previous"])


def test_scaling_skips_a_size_estimated_over_budget_and_says_so(baseline):
    strict = Settings(repeats=1, warmup=0, scaling_sizes=(10, 1_000_000), run_budget_s=1e-6)
    first, second = measure_scaling(strict, baseline)["sizes"]
    assert first["status"] == "measured"
    assert second["status"].startswith("skipped: estimated") and "budget" in second["status"]


def test_repetitions_shrink_to_fit_the_size_budget():
    settings = Settings(repeats=5, warmup=1, size_budget_s=25.0)
    assert repetitions(None, settings) == (5, 1)
    assert repetitions(1.0, settings) == (5, 1)
    assert repetitions(10.0, settings) == (2, 0)
    assert repetitions(100.0, settings) == (1, 0)


def test_no_notebooks_means_not_available(tmp_path):
    assert measure_notebooks(TINY, tmp_path)["status"].startswith("not available: no lecture")


def test_notebooks_are_timed_against_the_kernel_floor_and_failures_reported(tmp_path):
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                           nbformat.v4.new_code_cell("x + 1")])
    nbformat.write(good, tmp_path / "00_good.ipynb")
    (tmp_path / "01_broken.ipynb").write_text("{ not json", encoding="utf-8")  # fails kernel-free
    group = measure_notebooks(TINY, tmp_path)
    assert group["status"] == "measured"
    ok, broken = group["notebooks"]
    assert ok["status"] == "measured" and ok["code_cells"] == 2
    assert finite_positive(ok["ratio_to_floor"])
    assert broken["status"].startswith("error:") and broken["notebook"] == "01_broken.ipynb"


def test_quick_run_writes_json_with_all_six_groups_and_prints_the_table(tmp_path, capsys):
    output = tmp_path / "results" / "latest.json"
    assert main(["--quick", "--output", str(output), "--notebooks", str(tmp_path)]) == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["meta"]["mode"] == "quick" and results["meta"]["settings"]["repeats"] == 1
    assert sorted(results["groups"]) == ["1_event_throughput", "2_scenario_throughput",
                                         "3_grading_cost", "4_widget_latency",
                                         "5_notebook_run_time", "6_scaling"]
    printed = capsys.readouterr().out
    for label in ("1 event throughput", "2 scenario throughput", "3 grading cost",
                  "4 widget latency", "5 notebook run time", "6 scaling"):
        assert label in printed
    assert printed.count("\n") < 40
    assert format_table(results) in printed
    assert QUICK.scaling_sizes == tuple(e["messages"] for e in results["groups"]["6_scaling"]
                                        ["sizes"])
    grading = results["groups"]["3_grading_cost"]
    assert grading["status"] == "measured" and finite_positive(grading["floor"]["timing"]
                                                                ["median_s"])
    for entry in grading["assignments"]:
        assert entry["score"] == entry["max_score"] > 0, entry  # a broken check is no figure
        assert finite_positive(entry["ratio_to_floor"])
    widget = results["groups"]["4_widget_latency"]
    assert widget["status"] == "measured" and widget["lost_acked_shown"] == 10
    assert finite_positive(widget["median_s"]) and widget["p95_s"] >= widget["median_s"]
