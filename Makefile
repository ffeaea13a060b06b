# GLVD Face: every target sets up .venv on first use.
#   make demo   build + install the extension into Blender (bpy), reconstruct a photo -> out/
#   make test   ruff check + pytest (Blender tests in bpy 5.0.1, Python 3.11)
#   make test-blender52  the Blender tests in bpy 5.2.3 (Python 3.13, its own venv .venv52)
#   make bench  benchmark scripts (print figures, never assert on time; AGAINST=<rev> adds bench_against)
#   make build  python build.py (the full extension zip, with dependency wheels)
#   make train  train the model (glvd-train train, the training package in training/)

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.glvd-installed
# Blender 5.2 LTS as a module (bpy 5.2.3) needs Python 3.13: pyenv's, else python3.13 on PATH
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) python3.13)
VENV52 := .venv52
STAMP52 := $(VENV52)/.glvd-installed
PYTEST_ARGS ?=
TRAIN_ARGS ?=
BUILD_ARGS ?=

.PHONY: all setup demo test test-blender52 lint bench build train clean

all: test

# Re-run the install when the pins or the runtime's or the training package's metadata change.
$(STAMP): requirements.txt vendor/glvd/pyproject.toml training/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -r requirements.txt
	$(PY) -m pip install --no-build-isolation --no-deps -e vendor/glvd
	$(PY) -m pip install --no-build-isolation --no-deps -e training
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) build.py --no-deps
	$(PY) demo.py

lint: $(STAMP)
	$(PY) -m ruff check .

# pytest exits 5 when it collected nothing: say so and fail (it would be a
# broken test layout, not a pass).
test: $(STAMP) lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

# Only bpy (and the numpy it pins) in .venv52: pytest runs from .venv, starts each Blender 5.2
# session with .venv52's Python, and the worker runs in .venv through the "Python" preference
# (the Linux route for Blender 5.1+, docs/blender.md).
$(STAMP52): requirements-blender52.txt
	@test -x $(VENV52)/bin/python || $(PYTHON313) -m venv $(VENV52)
	$(VENV52)/bin/python -m pip install -r requirements-blender52.txt
	@touch $(STAMP52)

test-blender52: $(STAMP) $(STAMP52)
	GLVD_BPY52_PYTHON=$(abspath $(VENV52))/bin/python $(PY) -m pytest $(PYTEST_ARGS) tests/test_blender52.py

# bench_against.py compares with another git revision: make bench AGAINST=<rev> (skipped without it)
bench: $(STAMP)
	@set -e; for f in bench/bench_*.py; do \
	  if [ "$$f" = bench/bench_against.py ]; then \
	    if [ -z "$(AGAINST)" ]; then echo "== $$f: skipped (make bench AGAINST=<git rev>)"; continue; fi; \
	    echo "== $$f $(AGAINST)"; $(PY) $$f $(AGAINST); continue; \
	  fi; \
	  echo "== $$f"; $(PY) $$f; done

build: $(STAMP)
	$(PY) build.py $(BUILD_ARGS)

train: $(STAMP)
	$(VENV)/bin/glvd-train train $(TRAIN_ARGS)

clean:
	rm -rf build dist out .pytest_cache .ruff_cache
