# GLVD Face: every target sets up .venv on first use.
#   make demo   build + install the extension into Blender (bpy), reconstruct a photo -> out/
#   make test   ruff check + pytest
#   make bench  benchmark scripts (print figures, never assert on time; AGAINST=<rev> adds bench_against)
#   make build  python build.py (the full extension zip, with dependency wheels)
#   make train  train the model (glvd-train train, the training package in training/)

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.glvd-installed
PYTEST_ARGS ?=
TRAIN_ARGS ?=
BUILD_ARGS ?=

.PHONY: all setup demo test lint bench build train clean

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
