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
# Independent tests run on four workers (pytest-xdist) even on two cores: most e2e tests wait on
# wall-clock time (the 60 s fault window, the relay's minute of room), not on the CPU. `--dist loadfile`
# keeps a file on one worker, so the fault window's module fixture runs once; with
# --no-loadscope-reorder the files go out in collection order, the window's first
# (tests/e2e/faults/conftest.py), so it starts at once and nothing queues behind it.
# PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 6
# Python writes bytecode caches even where the environment says not to (PYTHONDONTWRITEBYTECODE,
# set on some CI and sandbox machines): otherwise each of the suite's hundreds of daemon starts
# and each worker compiles aiohttp, pydantic and our modules from source again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install lint typecheck unit suite test demo bench system-deps clean

define check_python
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required") if sys.version_info < (3, 11) else None'
endef

# The test venv is installed by uv (from PyPI, put into the venv by the system's pip): ~4 s
# where pip took 16-23 s of a fresh `make test`, whose budget is 120 s. uv does not byte-compile
# (the tests compile what they import). Where the system pip cannot install into the venv
# (pip < 22.3 has no --python) or uv cannot be had, plain pip does the same job, slower.
$(STAMP): pyproject.toml
	$(check_python)
	rm -rf $(VENV)
	$(PYTHON) -m venv --without-pip $(VENV)
	@if $(PYTHON) -m pip --python $(BIN)/python install -q --disable-pip-version-check uv \
		&& $(BIN)/uv pip install --python $(BIN)/python -q -e ".[test]"; then :; else \
		echo "uv is not available: installing with pip"; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) \
		&& $(BIN)/python -m pip install -q --upgrade pip \
		&& $(BIN)/python -m pip install -q --no-compile -e ".[test]"; \
	fi
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

# lint-imports checks the import contracts in pyproject.toml ([tool.importlinter]): the core
# imports no shell, only the command line imports the composition root, the layers, no circles.
lint: install
	$(BIN)/ruff check tesla_smart_charger tests
	$(BIN)/lint-imports --no-cache

# nice: beside pytest, mypy takes only CPU the tests' daemons leave idle.
typecheck: install
	nice -n 10 $(BIN)/mypy

# Only the plugins the suite uses: autoloaded, schemathesis' and hypothesis' pytest plugins make
# every worker assertion-rewrite all of schemathesis at start (2 s each, 4 workers on 2 cores).
suite: install
	PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(BIN)/pytest -p asyncio -p xdist -p timeout \
		-q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The fast pure layer alone (tests/unit): decisions, parsing, the
# simulated car and house, in one process with no daemon, server, socket or child process (a
# test there that opens one fails). Seconds; `make test` runs it too, inside the suite.
unit: install
	PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(BIN)/pytest -p asyncio -p timeout -q -m unit --durations=5 tests/unit

# ruff and mypy run beside pytest (it mostly waits on the clock); -O keeps each one's output whole.
test: install system-deps
	@$(MAKE) --no-print-directory -j 3 -O lint typecheck suite

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/tesla-smart-charger demo --scenario $(SCENARIO)

# Exits 1 when a target in docs/benchmarks.md is missed; BENCH_ARGS="--quick" for a short run.
bench: install
	$(BIN)/python -m tesla_smart_charger.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
