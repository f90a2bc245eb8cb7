# `make test` and `make demo` do all their own set-up on a fresh machine.
#
# The kit runs on every Keras backend, and `make test` runs the suite under
# each: TensorFlow (with ruff), JAX and, where a CPU-only torch wheel is on
# the machine, torch. Each backend has its own virtual environment, so the
# JAX and torch runs also prove that TensorFlow is not needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JAX_VENV ?= .venv-jax
JAX_STAMP := $(JAX_VENV)/.installed
TORCH_VENV ?= .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed
# The registry's torch wheel pulls gigabytes of CUDA packages: torch is
# tested only from a CPU wheel already on the machine (or TORCH_WHEEL=...).
TORCH_WHEEL ?= $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test test-tensorflow test-jax test-torch demo lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[tensorflow,tensorboard,test,demo,export-tensorflow]"
	touch $(STAMP)

$(JAX_STAMP): pyproject.toml
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(JAX_VENV)/bin/python -m pip install --quiet -e ".[jax,test,demo]"
	touch $(JAX_STAMP)

$(TORCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install --quiet "$(TORCH_WHEEL)" -e ".[test,demo,export-torch]"
	touch $(TORCH_STAMP)

test: test-tensorflow test-jax test-torch

test-tensorflow: $(STAMP)
	$(BIN)/ruff check .
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q

test-jax: $(JAX_STAMP)
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest -q

ifneq ($(TORCH_WHEEL),)
test-torch: $(TORCH_STAMP)
	KERAS_BACKEND=torch $(TORCH_VENV)/bin/python -m pytest -q
else
test-torch:
	@echo "test-torch: skipped, no CPU-only torch wheel on this machine" \
		"(set TORCH_WHEEL=path/to/torch-*+cpu-*.whl to run it)."
endif

demo: $(STAMP)
	$(BIN)/python -m keras_relu_kit demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(JAX_VENV) $(TORCH_VENV) build *.egg-info .pytest_cache
