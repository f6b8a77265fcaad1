"""The trusted pass outside the kernel: re-grade answer cells where they cannot cheat.

nbgrader runs a submission's cells in one kernel, so a student cell can patch
anything a later test cell calls and grant itself the points. This pass runs
after ``nbgrader autograde``, in a fresh process that never executes student
code: it takes the *source* of the answer cells, the instructor's own setup and
test cells (from ``solutions/``, hidden tests included), and runs each test
cell here with the learner's functions bound as :class:`SourceFunction` — they
are defined and called only inside the grading sandbox (DESIGN §6). The
result is written to the gradebook as each test cell's score; where it differs
from the kernel's, the submission is flagged in the report.

Run it as ``python -m course_lib.autograde [COURSE_DIR]`` (``make autograde`` does).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
from contextlib import redirect_stdout, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from course_lib.grading import SourceFunction


@dataclass(frozen=True)
class CellResult:
    """One test cell of one submission: the kernel's score and the trusted one."""

    student: str
    assignment: str
    grade_id: str
    points: float
    kernel_score: float | None
    trusted_score: float
    reason: str

    @property
    def flagged(self) -> bool:
        """The kernel granted something the trusted pass did not (or the reverse)."""
        return self.kernel_score is not None and self.kernel_score != self.trusted_score


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {}) if cell.cell_type == "code" else {}


def _answer_program(instructor, submission) -> tuple[list[str], list[str]]:
    """The instructor's setup cells, then the learner's answer cells; and the names to bind."""
    setup = [c.source for c in instructor.cells
             if c.cell_type == "code" and not _nbgrader(c).get("grade")
             and not _nbgrader(c).get("solution")]
    answers = [c for c in submission.cells if _nbgrader(c).get("solution")
               and c.cell_type == "code"]
    cells = setup + [c.source for c in answers]
    names = {_nbgrader(c).get("grade_id") for c in answers}
    for cell in cells:
        with suppress(SyntaxError):  # the sandbox reports a SyntaxError on every check
            names |= {node.name for node in ast.parse(cell).body
                      if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    return cells, sorted(n for n in names if n)


def _test_source(source: str) -> str:
    """A test cell as plain Python: IPython-only lines (traceback mode) dropped."""
    return "\n".join(line for line in source.splitlines() if "get_ipython()" not in line)


def grade_submission(instructor_path: Path, submission_path: Path) -> list[tuple[str, float,
                                                                               float, str]]:
    """Run every autograder test cell of the instructor's notebook against a submission.

    Returns (grade_id, points, trusted score, reason) per test cell. The
    instructor's setup cells run here (they are trusted); the learner's code
    does not.
    """
    instructor = nbformat.read(instructor_path, 4)
    submission = nbformat.read(submission_path, 4)
    cells, names = _answer_program(instructor, submission)
    namespace: dict = {"__name__": "__trusted_pass__"}
    for cell in instructor.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and not meta.get("grade") and not meta.get("solution"):
            exec(compile(cell.source, "<setup>", "exec"), namespace)  # noqa: S102 - instructor's
    for name in names:
        namespace[name] = SourceFunction(cells, name)
    results = []
    for cell in instructor.cells:
        meta = _nbgrader(cell)
        if not meta.get("grade") or meta.get("solution"):
            continue
        points = float(meta.get("points", 0))
        try:
            with redirect_stdout(io.StringIO()):  # a passed check prints its summary
                exec(compile(_test_source(cell.source), f"<{meta['grade_id']}>",  # noqa: S102
                             "exec"), dict(namespace))
            results.append((meta["grade_id"], points, points, "passed"))
        except BaseException as error:  # noqa: BLE001 - any failure of a test cell scores 0
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            results.append((meta["grade_id"], points, 0.0,
                            f"{type(error).__name__}: {first}"[:300]))
    return results


def trusted_pass(course: Path, assignments: list[str] | None = None,
                 students: list[str] | None = None) -> list[CellResult]:
    """Grade every autograded submission again (or those named) and record the trusted scores."""
    from nbgrader.api import Gradebook, MissingEntry

    autograded = course / "autograded"
    results: list[CellResult] = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for notebook in sorted(autograded.glob("*/*/*.ipynb")):
            student, assignment = notebook.parent.parent.name, notebook.parent.name
            if (assignments and assignment not in assignments) or (
                    students and student not in students):
                continue
            instructor = course / "solutions" / assignment / notebook.name
            for grade_id, points, score, reason in grade_submission(instructor, notebook):
                try:
                    grade = gradebook.find_grade(grade_id, notebook.stem, assignment, student)
                except MissingEntry:
                    grade = None
                kernel = grade.auto_score if grade is not None else None
                if grade is not None:
                    grade.manual_score = score
                results.append(CellResult(student, assignment, grade_id, points, kernel,
                                          score, reason))
            gradebook.db.commit()
    return results


def report(results: list[CellResult]) -> str:
    """A table: per test cell, the kernel's score, the trusted one, and flags."""
    lines = [f"{'student':<16} {'assignment':<22} {'test cell':<28} kernel trusted  note"]
    for r in results:
        kernel = "-" if r.kernel_score is None else f"{r.kernel_score:g}"
        note = "FLAGGED: the kernel's score differs" if r.flagged else ""
        if r.trusted_score < r.points:
            note = (note + "; " if note else "") + r.reason
        lines.append(f"{r.student:<16} {r.assignment:<22} {r.grade_id:<28} {kernel:>6} "
                     f"{r.trusted_score:>7g}  {note}")
    flagged = sorted({(r.student, r.assignment) for r in results if r.flagged})
    lines.append(f"{len(flagged)} submission(s) flagged"
                 + (": " + ", ".join(f"{s}/{a}" for s, a in flagged) if flagged else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the trusted pass over a course directory; print the report, save it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("course", nargs="?", default=".", type=Path)
    parser.add_argument("--assignment", action="append")
    parser.add_argument("--student", action="append")
    args = parser.parse_args(argv)
    results = trusted_pass(args.course, args.assignment, args.student)
    print(report(results))
    out = args.course / "autograded" / "trusted_pass.json"
    out.write_text(json.dumps([asdict(r) | {"flagged": r.flagged} for r in results],
                              indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
