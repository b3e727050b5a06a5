# The README's commands. Each target creates/reuses the project-local virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two install levels: the runtime set (the library and its console script; `make demo`) and the dev set on top
# of it (test tools and peers; `make setup`, `make test`, `make bench`).
RUNTIME_STAMP := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
# Every install is pinned by the committed constraints file, so pip never backtracks. `make setup
# CONSTRAINTS=` installs unpinned (to refresh the pins: see README "Installing").
CONSTRAINTS ?= constraints.txt
PIP := $(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
CODE := $(wildcard src tests examples bench demo)

.PHONY: setup runtime demo test lint format bench bench-small constraints clean

setup: $(STAMP)

runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e .
	touch $@

$(STAMP): $(RUNTIME_STAMP)
	$(PIP) -e '.[dev]'
	touch $@

demo: $(RUNTIME_STAMP)
	$(PY) -m demo.shapes .demo/shapes
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
	$(PY) -m bench.scale

bench-small: $(STAMP)
	$(PY) -m bench.run --small

# Rewrite constraints.txt from the working .venv (after upgrading something in it and passing make test).
constraints: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip --version | awk '{print "pip==" $$2}'; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i '^lit[-_]streaming'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
