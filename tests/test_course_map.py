"""The course map (DESIGN §3) is real: every lecture exists, every claim is demonstrated.

A claim counts as demonstrated when a code cell of some lecture notebook other
than 10_summary plays it by number: ``scenarios.run(4, …)``, ``scenarios.play(4, …)``,
``widgets.config_panel(claim=4)``, ``widgets.panel_outputs(config, claim=4)`` and so
on. The summary's table plays every claim, so it cannot stand in for a lecture
that teaches one; instead it must rebuild the table with ``table_rows``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from course_lib import scenarios

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

COURSE_MAP = (  # DESIGN §3, in order
    "00_start_here",
    "01_replicated_log",
    "02_durable_writes",
    "03_at_most_once",
    "04_at_least_once",
    "05_outbox",
    "06_idempotent_producer",
    "07_transactions",
    "08_end_to_end",
    "09_real_kafka",
    "10_summary",
)
SUMMARY = "10_summary"

# scenarios.run(4, …) and play(4, …) take the claim first; the widgets take claim=4.
_CALL = re.compile(r"\b(?:run|play)\(\s*(?:claim\s*=\s*)?(\d+)\b")
_KEYWORD = re.compile(r"\bclaim\s*=\s*(\d+)\b")


def claims_played(source: str) -> set[int]:
    """The claim numbers a piece of notebook code plays explicitly."""
    return {int(n) for pattern in (_CALL, _KEYWORD) for n in pattern.findall(source)}


def _code(name: str) -> str:
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def _present() -> list[str]:
    return [name for name in COURSE_MAP if (NOTEBOOK_DIR / f"{name}.ipynb").exists()]


def test_claim_pattern_finds_the_usual_forms_and_nothing_else():
    source = """
    failing = scenarios.run(1, "failing")
    fixed = scenarios.run(claim=2, variant="fixed")
    old = scenarios.play(3, config.preset("pre-3.0"))
    panel = widgets.config_panel(claim=12)
    report, svg = widgets.panel_outputs({"acks": "all"}, claim=13)
    storm = scenarios.retry_storm(idempotent=False)
    print(run.report.summary())  # run(x) with no number
    rows = scenarios.table_rows(seed=7)
    """
    assert claims_played(source) == {1, 2, 3, 12, 13}


@pytest.mark.parametrize("name", COURSE_MAP)
def test_every_notebook_of_the_course_map_exists(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.exists(), f"DESIGN §3 lists {name}, but {path} is missing"
    nbformat.validate(nbformat.read(path, as_version=4))


def test_every_notebook_in_the_folder_is_on_the_course_map():
    stray = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb") if p.stem not in COURSE_MAP)
    assert not stray, f"notebooks not in DESIGN §3: {stray}"


def test_every_claim_is_demonstrated_by_some_lecture():
    played = {name: claims_played(_code(name)) for name in _present() if name != SUMMARY}
    missing = sorted(set(scenarios.claims()) - set().union(*played.values()))
    assert not missing, (f"claims no lecture plays by number: {missing} "
                         f"(lectures present: {sorted(played)})")


def test_every_claim_a_lecture_plays_exists():
    known = set(scenarios.claims())
    for name in _present():
        unknown = claims_played(_code(name)) - known
        assert not unknown, f"{name} plays claims that do not exist: {sorted(unknown)}"


def test_summary_rebuilds_the_table_from_simulation():
    assert (NOTEBOOK_DIR / f"{SUMMARY}.ipynb").exists()
    source = _code(SUMMARY)
    assert "scenarios.table_rows(" in source and "scenarios.format_table(" in source
    assert "scenarios.support_table(" in source


def _prose(name: str) -> str:
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


# Every point of the seed article (../shared/seed/), the lecture that teaches it, and a
# pattern its narrative must contain. The claims behind them are checked above.
ARTICLE_POINTS = (
    ("the three guarantees, defined", "00_start_here", r"at-most-once.*at-least-once"),
    ("the producer retries failed sends", "04_at_least_once", r"\bretries\b"),
    ("the producer must stay running during retries", "04_at_least_once",
     r"stay(s)? (running|alive)|remain(s)? running"),
    ("the broker must recover before retries run out", "04_at_least_once",
     r"recover(s)? before"),
    ("the consumer commits after processing", "04_at_least_once", r"commit(s|ting)? (only )?after"),
    ("acks=all", "02_durable_writes", r"acks=all"),
    ("min.insync.replicas at least 2", "02_durable_writes",
     r"min\.insync\.replicas.{0,20}\b2\b"),
    ("replication.factor at least 3", "02_durable_writes", r"replication\.factor.{0,20}\b3\b"),
    ("unclean leader election off", "02_durable_writes",
     r"unclean\.leader\.election\.enable.{0,12}(false|off)"),
    ("persist outbound messages to survive a crash", "05_outbox", r"persist"),
    ("a restart, an OOM or a crash loses an in-memory buffer", "05_outbox",
     r"OOM|out of memory"),
    ("the support table", "10_summary", r"support table"),
)


@pytest.mark.parametrize(("point", "lecture", "pattern"), ARTICLE_POINTS,
                         ids=[point for point, _, _ in ARTICLE_POINTS])
def test_every_point_of_the_seed_article_is_taught(point, lecture, pattern):
    assert re.search(pattern, _prose(lecture), re.IGNORECASE | re.DOTALL), (
        f"{lecture} should teach: {point}")
