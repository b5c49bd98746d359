# Everything a fresh machine needs is installed by these targets themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make demo` needs only the runtime: its own small venv, no test tools (see README, Development).
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed-stamp
CONFIG ?= config.json
# `make demo SCENARIO=two-cars` or `SCENARIO=solar` (see `tesla-smart-charger demo --help`).
SCENARIO ?= evening
# Independent tests run on two workers (pytest-xdist); PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 2

.PHONY: install lint typecheck unit test demo bench system-deps clean

define check_python
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required") if sys.version_info < (3, 11) else None'
endef

$(STAMP): pyproject.toml
	$(check_python)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

$(DEMO_STAMP): pyproject.toml
	$(check_python)
	@echo "==> creating $(DEMO_VENV) (runtime only: aiohttp, pydantic, tenacity, prometheus-client, cryptography)"
	$(PYTHON) -m venv $(DEMO_VENV)
	@echo "==> installing tesla-smart-charger into $(DEMO_VENV) (about 70 MiB, under a minute)"
	$(DEMO_VENV)/bin/python -m pip install --progress-bar on --disable-pip-version-check .
	@echo "==> installed; $(DEMO_VENV) takes $$(du -sh $(DEMO_VENV) | cut -f1)"
	touch $(DEMO_STAMP)

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
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --durations=15

test: install system-deps lint typecheck unit

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/tesla-smart-charger demo --scenario $(SCENARIO)

# Exits 1 when a target in docs/benchmarks.md is missed; BENCH_ARGS="--quick" for a short run.
bench: install
	$(BIN)/python -m tesla_smart_charger.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
