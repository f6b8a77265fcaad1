"""nbgrader settings for the graded assignments (DESIGN §1, §5).

solutions/<ps>/ holds the instructor's SOURCE notebooks (answers, visible and hidden
tests); `nbgrader generate_assignment <ps> --force` writes the student RELEASE into
exercises/<ps>/. Students hand in submitted/<student>/<ps>/; `make autograde` fills
autograded/, `make feedback` fills feedback/. The gradebook lives in gradebook.db next
to this file (gitignored, like submitted/, autograded/ and feedback/).
"""

import os

from nbconvert.preprocessors import CoalesceStreamsPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "delivery-semantics-lab"
c.CourseDirectory.root = HERE
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")

# A learner may delete or reorder test cells; autograde puts every missing grade cell
# back from the gradebook instead of failing the notebook.
c.OverwriteCells.add_missing_cells = True

# Feedback must not show the hidden tests: nbgrader 0.9.6's default list is
# [GetGrades, CSSHTMLHeaderPreprocessor]; ClearHiddenTests strips the
# ### BEGIN/END HIDDEN TESTS regions from the autograded notebook before rendering.
# CoalesceStreamsPreprocessor merges a cell's consecutive printed outputs, so the page does not
# depend on when the kernel happened to flush (grading twice must give the same feedback).
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CoalesceStreamsPreprocessor,
                                    CSSHTMLHeaderPreprocessor]
c.CoalesceStreamsPreprocessor.enabled = True

# Per-cell limit while autograding (seconds). Each graded check also limits every run of
# the learner's function itself (course_lib.grading), so this is the backstop.
c.Execute.timeout = 120

# Defaults, stated so nobody has to look them up.
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.enforce_metadata = True
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"
c.ClearHiddenTests.enforce_metadata = True
