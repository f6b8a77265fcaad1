# Delivery Semantics Lab: newcomer commands.
#   make lab    create .venv if needed, install, open JupyterLab on notebooks/
#   make test   create .venv if needed, install, lint, run the whole test suite
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

.PHONY: help setup lab test lint bench clean

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
	@if [ -f notebooks/00_start_here.ipynb ]; then target=notebooks/00_start_here.ipynb; \
	 else target=notebooks/; fi; \
	 $(VENV_PATH) $(VENV)/bin/jupyter lab $(ROOT_ARGS) $(LAB_ARGS) "$$target"

lint: setup
	$(VENV)/bin/ruff check course_lib tests benchmarks

test: lint
	$(VENV_PATH) $(PY) -m pytest -q

bench: setup
	@if [ -f benchmarks/__main__.py ]; then $(VENV_PATH) $(PY) -m benchmarks; \
	 else echo "no benchmarks/__main__.py"; fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
