# Delivery Semantics Lab: newcomer commands.
#   make lab    create .venv if needed, install, open JupyterLab on the course (notebooks/)
#   make test   create .venv if needed, install, lint, run the whole test suite (one test
#               file per worker, as many workers as cores: pytest-xdist)
#   make bench  create .venv if needed, install, run the benchmarks (table + JSON file)
#   make lint   ruff over course_lib, tests and benchmarks
#   make clean  remove .venv and caches

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Interpreter used only to create the venv: python3.11 if present, else python3.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

# Same hash seed everywhere, so set/dict iteration order cannot vary between runs.
export PYTHONHASHSEED := 0
# nbgrader shells out to tools installed in the venv (alembic), so put it on PATH.
VENV_PATH := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
# Extra options for `jupyter lab`, e.g. make lab LAB_ARGS="--no-browser --port 8890"
LAB_ARGS ?=
# JupyterLab refuses to run as root unless told; containers and CI machines often are root.
ROOT_ARGS := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: help setup lab test lint bench clean browser

help:
	@sed -n 's/^#   //p' Makefile

setup: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found (tried python3.11, python3)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "$(PYTHON) is not Python 3.11; install 3.11 or run: make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

lab: setup
	$(VENV_PATH) $(VENV)/bin/jupyter lab $(ROOT_ARGS) --ServerApp.root_dir="$(CURDIR)" \
	  --LabApp.default_url="/lab/tree/notebooks/00_start_here.ipynb" $(LAB_ARGS)

lint: setup
	$(VENV)/bin/ruff check course_lib tests benchmarks

test: lint browser
	$(VENV_PATH) $(PY) -m pytest -q -rs --durations=10 -n auto --dist loadfile

# tests/test_browser.py drives Debian's /usr/bin/chromium (never a downloaded browser).
# As root a missing chromium is installed (a failed install stops `make test`); as another
# user the browser test is skipped and says why. Silent when chromium is already there.
browser:
	@test -x /usr/bin/chromium || if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for tests/test_browser.py" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; else echo "chromium is missing and only root can install it:" \
	  "tests/test_browser.py will be skipped"; fi

bench: setup
	@if [ -f benchmarks/__main__.py ]; then $(VENV_PATH) $(PY) -m benchmarks; \
	 else echo "no benchmarks/__main__.py"; fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# ----- grading with nbgrader (nbgrader_config.py: solutions/ -> exercises/) -----
#   make release    regenerate exercises/<ps>/ from every solutions/<ps>/ (commit the result)
#   make autograde  grade every submitted/<student>/<ps>/ into autograded/ and gradebook.db
#   make feedback   write feedback/<student>/<ps>/*.html for everything autograded
#   make export     write grades.csv from gradebook.db
#   make sample-class  hand in a sample class: alice = every solution, bob = every exercise
NBGRADER := $(VENV_PATH) $(VENV)/bin/nbgrader
# Assignment names present under a folder laid out <folder>/<student>/<ps>/.
assignments_in = $(sort $(notdir $(patsubst %/,%,$(wildcard $(1)/*/*/))))

.PHONY: release autograde feedback export sample-class

release: setup
	@test -n "$(wildcard solutions/*/)" || { echo "no solutions/<ps>/ folders"; exit 1; }
	for ps in $(notdir $(patsubst %/,%,$(wildcard solutions/*/))); do \
	  $(NBGRADER) generate_assignment "$$ps" --force || exit 1; done

# autograde needs the gradebook that `make release` fills with the grade cells.
gradebook.db:
	$(MAKE) release

autograde: setup gradebook.db
	@test -n "$(call assignments_in,submitted)" || \
	  { echo "nothing in submitted/<student>/<ps>/ (see the README's Instructors section)"; exit 1; }
	# nbgrader grades the whole class even when one notebook kills its kernel; it then
	# exits non-zero. Grade every assignment and run the trusted pass anyway, and fail at
	# the end, so one hostile notebook cannot stop the class from being graded.
	status=0; for ps in $(call assignments_in,submitted); do \
	  $(NBGRADER) autograde "$$ps" || status=1; done; \
	$(VENV_PATH) $(PY) -m course_lib.autograde . || exit 1; \
	if [ $$status -ne 0 ]; then echo "nbgrader could not grade some notebooks (ERROR lines" \
	  "above): they have no autograded copy and score 0"; fi; exit $$status

feedback: setup
	@test -n "$(call assignments_in,autograded)" || { echo "nothing autograded yet"; exit 1; }
	for ps in $(call assignments_in,autograded); do \
	  $(NBGRADER) generate_feedback "$$ps" || exit 1; done

export: setup
	$(NBGRADER) export

sample-class:
	for ps in $(notdir $(patsubst %/,%,$(wildcard exercises/*/))); do \
	  mkdir -p "submitted/alice/$$ps" "submitted/bob/$$ps" && \
	  cp "solutions/$$ps/$$ps.ipynb" "submitted/alice/$$ps/" && \
	  cp "exercises/$$ps/$$ps.ipynb" "submitted/bob/$$ps/" || exit 1; done
	@echo "handed in: alice (the solutions) and bob (the untouched exercises); now make autograde"
