# Two entry points for a fresh machine (Python 3.11 + pip): `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kvcache-installed

.PHONY: demo test bench install clean

# Rebuilt when the build inputs change (the C extension is compiled in place).
$(STAMP): pyproject.toml setup.py engine/_seqcache.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Replay the bundled sample trace through the engine.
demo: $(STAMP)
	$(BIN)/kvcache replay sample_traces/agents.jsonl

## Run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest

## Replay throughput benchmark (prints figures; not part of the tests).
bench: $(STAMP)
	$(BIN)/python benchmarks/replay_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
