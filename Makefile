# Two commands on a fresh machine: `make demo` and `make test`. Every target installs what is missing first
# and is safe to run again. Set-up is quiet when it works and prints the failing command when it does not.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PYTHONUNBUFFERED := 1

.PHONY: setup system-deps demo test ui studio bench lint lint-only constraints clean

setup: system-deps $(STAMP) $(DAGSTER_HOME)/dagster.yaml

system-deps:
	@scripts/ensure-system-deps.sh $(SYSTEM_DEPS)

$(PY):
	@scripts/quiet.sh $(PYTHON) -m venv $(VENV)

# torch first, pinned: it takes the CPU wheel on these machines; unpinned, pip would pull GB of CUDA packages.
# Everything else at the versions in constraints.txt (the tested set).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	@scripts/quiet.sh $(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	@scripts/quiet.sh $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	@touch $@

# The persistent Dagster instance: the repository's dagster.yaml plus the `gpu` pool limited to 1. A newer
# dagster.yaml from the repository replaces the instance's; one that differs is kept beside it first, under a
# name of its own (a later update must not replace a copy that holds the user's edits).
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	@if [ -f $@ ] && ! cmp -s dagster.yaml $@; then kept=$@.$$(date +%Y%m%d-%H%M%S).bak && cp $@ $$kept && \
		echo "$@: now the repository's dagster.yaml; the one it had is kept as $$kept"; fi
	@cp dagster.yaml $@
	@scripts/quiet.sh $(PY) -m heygem_pipeline.instance init

demo: setup
	@$(VENV)/bin/heygem demo

# Three pytest-xdist workers even on 2 cores: most test time is waiting on servers and subprocesses (406 tests on
# this 2-core machine: 6 min 8 s with 3 workers, 7 min 53 s with 2). --dist loadfile keeps each file's shared set-up
# in one worker; tests/conftest.py starts the longest files first.
test: SYSTEM_DEPS = --for-tests
test: setup
	@$(MAKE) --no-print-directory lint-only
	@$(VENV)/bin/pytest -q -n 3 --dist loadfile

ui: setup
	@$(VENV)/bin/heygem ui

studio: setup
	@$(VENV)/bin/heygem studio

bench: setup
	@$(PY) -m benchmarks

lint: setup
	@$(MAKE) --no-print-directory lint-only

# ruff; the layer contracts (pyproject.toml [tool.importlinter]); no import cycles, no module over 500 lines; the
# types of the engine and the bucket bookkeeping (pyproject.toml [tool.mypy]; incremental, cached in .mypy_cache).
lint-only:
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/lint-imports --no-cache > .lint-imports.log 2>&1 || { cat .lint-imports.log; exit 1; }
	@$(VENV)/bin/python scripts/check_layout.py
	@$(VENV)/bin/mypy --no-error-summary

# After changing dependencies in pyproject.toml: install them, then record the resulting set.
constraints: $(STAMP)
	@{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
