# One-command set-up on a fresh machine: `make test` creates .venv, installs everything, builds
# the op library and runs the test suite. TensorFlow: the CUDA build where nvidia-smi sees a GPU,
# tensorflow-cpu otherwise (override: make test TF_PACKAGE=tensorflow==2.21.*).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TF_PACKAGE ?= $(shell if nvidia-smi -L >/dev/null 2>&1; then echo 'tensorflow==2.21.*'; else echo 'tensorflow-cpu==2.21.*'; fi)
TF_NAME := $(firstword $(subst =, ,$(TF_PACKAGE)))
OTHER_TF := $(if $(filter tensorflow-cpu,$(TF_NAME)),tensorflow,tensorflow-cpu)
STAMP := $(VENV)/.installed-$(TF_NAME)

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install build test bench gpu-harness clean

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# the two TensorFlow wheels install the same module: never keep both
	$(PY) -m pip uninstall --quiet --yes $(OTHER_TF) >/dev/null 2>&1 || true
	$(PY) -m pip install --quiet "$(TF_PACKAGE)" -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

build: install
	$(PY) tf_ops/build.py

test: build
	$(PY) -m pytest

bench: build
	$(PY) benchmarks/ops.py

# On a machine with a GPU (no TensorFlow needed): CUDA kernels against the CPU kernels.
gpu-harness:
	$(PYTHON) tf_ops/gpu_harness/check_cuda_kernels.py --build

clean:
	rm -rf jsnet_tf/ops/lib tf_ops/gpu_harness/build .pytest_cache
