# Everything a fresh machine needs is installed by these targets themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.json

.PHONY: install lint typecheck unit test demo bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages the suite uses (chromium for the dashboard test, openssl for keygen checks,
# systemd for unit verification). Installed only when missing and only as root; tests that need
# them skip with a printed reason otherwise.
system-deps:
	@bash .ci/system-deps.sh

lint: install
	$(BIN)/ruff check tesla_smart_charger tests

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: install system-deps lint typecheck unit

demo: install
	$(BIN)/tesla-smart-charger demo

# Exits 1 when a target in docs/benchmarks.md is missed; BENCH_ARGS="--quick" for a short run.
bench: install
	$(BIN)/python -m tesla_smart_charger.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
