# One command to set up and start the agent (`make run`), one to set up and run the tests
# (`make test`). Debian packages are installed when run as root; otherwise the apt line is printed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

# Runtime: speech output (espeak-ng), audio I/O (PortAudio, ALSA's PulseAudio plugin), and what
# building llama-cpp-python from source needs. Tests add a private PulseAudio server and sox.
APT_RUN := espeak-ng libportaudio2 libasound2-plugins python3-venv python3-dev build-essential
APT_TEST := $(APT_RUN) pulseaudio pulseaudio-utils sox systemd desktop-file-utils openssl xvfb trayer imagemagick

# llama-cpp-python compiles llama.cpp; we use only libllama and ggml, so its multimodal library
# (LLAVA_BUILD) and the `common` helpers of llama.cpp's own programs are skipped: about half
# the compile. Your own CMAKE_ARGS (e.g. -DGGML_CUDA=on for GPU layers) are kept in front.
LLAMA_SLIM := -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/packaging/llama-cpp-slim.cmake
export CMAKE_ARGS := $(strip $(CMAKE_ARGS) $(LLAMA_SLIM))
PIP_INSTALL := $(PYTHON) packaging/pip-install-progress.py $(BIN)/python

.PHONY: run test lint deps-run deps-test clean

run: deps-run $(VENV)/.installed
	$(BIN)/edgevoice run $(ARGS)

test: deps-test $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check edgevoice tests benchmarks

deps-run:
	@./packaging/apt-deps.sh $(APT_RUN)

deps-test:
	@./packaging/apt-deps.sh $(APT_TEST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	@echo "installing edgevoice into $(VENV)"
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	@echo "installing edgevoice[test] into $(VENV)"
	$(PIP_INSTALL) -e '.[test]'
	@touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build dist *.egg-info
