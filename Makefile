# The README's commands. Each target creates/reuses the project-local virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CODE := $(wildcard src tests examples bench)

.PHONY: setup demo test lint format bench bench-small clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lit_streaming.demo.shapes .demo/shapes
	$(VENV)/bin/lit-streaming fit --config configs/demo.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(CODE)
	$(VENV)/bin/ruff format $(CODE)

test: lint
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) -m bench.run

bench-small: $(STAMP)
	$(PY) -m bench.run --small

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
