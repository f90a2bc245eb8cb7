# `make test` and `make demo` do all their own set-up on a fresh machine.
#
# The kit runs on every Keras backend, and `make test` runs the suite under
# each: TensorFlow, JAX and, where a CPU-only torch wheel is on the machine,
# torch, side by side (`-j3`). Each backend has its own virtual environment,
# so the JAX and torch runs also prove that TensorFlow is not needed. The
# TensorFlow environment also runs the checks that do not depend on a
# backend: ruff, mypy and the documentation build. The tests that do not
# depend on one (marked `backend_independent` or `any_backend`: the wheel,
# the fuzzing, the benchmarks' harness) run once, in the suite that ends
# first: torch's where it runs, TensorFlow's otherwise.
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
PYTEST_ARGS ?= -q
# keras-hub depends on tensorflow-text, hence TensorFlow, for its
# tokenizers; its layers and models import without it. The JAX and torch
# environments get it without its dependencies, plus those its imports need,
# so that they stay free of TensorFlow.
KERAS_HUB ?= keras-hub>=0.32
KERAS_HUB_IMPORTS := absl-py packaging regex rich sentencepiece tokenizers

export TF_CPP_MIN_LOG_LEVEL ?= 2
ifneq ($(TORCH_WHEEL),)
export KERAS_RELU_KIT_ONCE_BACKEND ?= torch
else
export KERAS_RELU_KIT_ONCE_BACKEND ?= tensorflow
endif

.PHONY: test suites test-tensorflow test-jax test-torch checks demo lint \
	typecheck docs dist bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e \
		".[tensorflow,tensorboard,test,demo,export-tensorflow,docs,dev,keras-hub]"
	touch $(STAMP)

$(JAX_STAMP): pyproject.toml
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(JAX_VENV)/bin/python -m pip install --quiet -e ".[jax,test,demo]" \
		$(KERAS_HUB_IMPORTS)
	$(JAX_VENV)/bin/python -m pip install --quiet --no-deps "$(KERAS_HUB)"
	touch $(JAX_STAMP)

$(TORCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install --quiet "$(TORCH_WHEEL)" \
		-e ".[test,demo,export-torch,dev]" $(KERAS_HUB_IMPORTS)
	$(TORCH_VENV)/bin/python -m pip install --quiet --no-deps "$(KERAS_HUB)"
	touch $(TORCH_STAMP)

# The three suites run side by side; each prints its output when it ends.
test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory -j3 --output-sync=target suites; \
	status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s in all (exit $$status)"; \
	exit $$status

suites: test-tensorflow test-jax test-torch

# oneDNN is off so that every x86 CPU runs TensorFlow's same Eigen
# kernels: with it on (the default on some CPUs only), NCHW convolutions
# and CPU allocator statistics exist on one machine and not on another.
test-tensorflow: checks
	TF_ENABLE_ONEDNN_OPTS=0 KERAS_BACKEND=tensorflow \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

test-jax: $(JAX_STAMP)
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# torch starts an OpenMP thread per core, and its threads spin waiting for
# each other: beside the two other suites (more busy processes than cores)
# a small model's steps ran 20x slower than with one thread. TensorFlow's
# and JAX's thread pools share the cores without that loss.
ifneq ($(TORCH_WHEEL),)
test-torch: $(TORCH_STAMP)
	OMP_NUM_THREADS=1 KERAS_BACKEND=torch \
		$(TORCH_VENV)/bin/python -m pytest $(PYTEST_ARGS)
else
test-torch:
	@echo "test-torch: skipped, no CPU-only torch wheel on this machine" \
		"(set TORCH_WHEEL=path/to/torch-*+cpu-*.whl to run it)."
endif

# What does not depend on the backend, once: style, types, documentation.
checks: lint typecheck docs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The wheel and the sdist, checked as PyPI would check them.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist
	$(BIN)/python -m twine check --strict dist/*

demo: $(STAMP)
	$(BIN)/python -m keras_relu_kit demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(JAX_VENV) $(TORCH_VENV) build dist site *.egg-info \
		.pytest_cache .mypy_cache
