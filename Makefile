# One-command set-up on a fresh machine: `make test` creates .venv, installs the package into it
# (editable, with its console scripts: jsnet-train, jsnet-evaluate, ...), builds the op library and
# the clustering extension, lints and runs the test suite. TensorFlow: the CUDA build where nvidia-smi sees a GPU,
# tensorflow-cpu otherwise (override: make test TF_PACKAGE=...).
#
# requirements.txt pins the versions CI tested: the install takes them as constraints (`pip install
# -r requirements.txt` reproduces the environment) and, with tensorflow-cpu, rewrites the file from
# what it installed, so a new dependency of pyproject.toml joins it at its installed version.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TF_PACKAGE ?= $(shell if nvidia-smi -L >/dev/null 2>&1; then echo 'tensorflow[and-cuda]==2.21.*'; else echo 'tensorflow-cpu==2.21.*'; fi)
TF_NAME := $(firstword $(subst =, ,$(TF_PACKAGE)))
OTHER_TF := $(if $(filter tensorflow-cpu,$(TF_NAME)),tensorflow,tensorflow-cpu)
STAMP := $(VENV)/.installed-$(TF_NAME)

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install build test doctor demo demo-shapenet demo-scannet bench gpu-harness clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# the two TensorFlow wheels install the same module: never keep both
	$(PY) -m pip uninstall --quiet --yes $(OTHER_TF) >/dev/null 2>&1 || true
	$(PY) -m pip install --quiet -c requirements.txt "$(TF_PACKAGE)" -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -c requirements.txt "tensorflow-serving-api==2.21.*"
	@if [ "$(TF_NAME)" = tensorflow-cpu ]; then $(PY) -m pip freeze --exclude-editable > requirements.txt.new && \
		if cmp -s requirements.txt.new requirements.txt; then rm requirements.txt.new; \
		else mv requirements.txt.new requirements.txt; echo "requirements.txt: updated to the installed versions"; fi; fi
	rm -f $(VENV)/.installed-*
	touch $@

build: install
	$(PY) tf_ops/build.py
	$(PY) -m jsnet_tf.clustering.build

test: build
	$(BIN)/ruff check .
	$(PY) -m pytest

# What jsnet-tf finds on this machine (TensorFlow build, GPUs, CPU kernels, native libraries) and a
# self-test of every op on every device; exits 1 with one line per problem.
doctor: build
	$(BIN)/jsnet-doctor

# The built-in demo: synthetic S3DIS -> prepared blocks -> a short training run with area 5 held
# out (the original's resampled blocks; semantic accuracy on one validation room of the training
# areas after every epoch) -> the paper's evaluation of area 5 with the last epoch (metrics,
# original-format outputs, PLY and PNG pictures), everything under $(DEMO_DIR).
DEMO_DIR ?= outputs/demo

demo: build
	$(BIN)/jsnet-synthetic --out $(DEMO_DIR)/raw --seed 0
	$(BIN)/jsnet-prepare-s3dis --raw $(DEMO_DIR)/raw --out $(DEMO_DIR)/s3dis --num_points 2048
	$(BIN)/jsnet-train --config demo --area 5 --data_dir $(DEMO_DIR)/s3dis --workdir $(DEMO_DIR)/train
	$(BIN)/jsnet-evaluate --workdir $(DEMO_DIR)/train --area 5 --out $(DEMO_DIR)/eval
	@echo "demo done: training curves in $(DEMO_DIR)/train/area5/metrics.json (TensorBoard: $(DEMO_DIR)/train/area5/tensorboard);"
	@echo "evaluation in $(DEMO_DIR)/eval: results.json, results.txt, confusion.png, pictures/*.png and *.ply"

# ShapeNet part: the built-in synthetic part set (the real release's layout) -> prepared h5 ->
# a short training (train split, validation on val) -> part mIoU on the test split, with pictures.
SHAPENET_DEMO_DIR ?= outputs/demo-shapenet

demo-shapenet: build
	$(BIN)/jsnet-synthetic-parts --out $(SHAPENET_DEMO_DIR)/raw --seed 0
	$(BIN)/jsnet-prepare-shapenet --raw $(SHAPENET_DEMO_DIR)/raw --out $(SHAPENET_DEMO_DIR)/shapenet
	$(BIN)/jsnet-train --config demo_shapenet --data_dir $(SHAPENET_DEMO_DIR)/shapenet --workdir $(SHAPENET_DEMO_DIR)/train
	$(BIN)/jsnet-evaluate --workdir $(SHAPENET_DEMO_DIR)/train --out $(SHAPENET_DEMO_DIR)/eval
	@echo "demo done: training curves in $(SHAPENET_DEMO_DIR)/train/metrics.json; part mIoU in $(SHAPENET_DEMO_DIR)/eval/results.txt"

# ScanNet v2: the built-in synthetic release (the real one's layout and formats, raw files under
# $(SCANNET_DEMO_DIR)/raw) -> prepared scenes -> a short training (train scenes, one held out for
# validation) -> the benchmark's evaluation of the val scenes (AP / AP50 / AP25 beside JSNet's metrics).
SCANNET_DEMO_DIR ?= outputs/demo-scannet

demo-scannet: build
	$(BIN)/jsnet-synthetic-scannet --out $(SCANNET_DEMO_DIR)/raw --seed 0
	$(BIN)/jsnet-prepare-scannet --raw $(SCANNET_DEMO_DIR)/raw --out $(SCANNET_DEMO_DIR)/scannet --split_dir $(SCANNET_DEMO_DIR)/raw/splits --num_points 2048
	$(BIN)/jsnet-train --config demo_scannet --data_dir $(SCANNET_DEMO_DIR)/scannet --workdir $(SCANNET_DEMO_DIR)/train
	$(BIN)/jsnet-evaluate --workdir $(SCANNET_DEMO_DIR)/train --out $(SCANNET_DEMO_DIR)/eval
	@echo "demo done: training curves in $(SCANNET_DEMO_DIR)/train/metrics.json; AP / AP50 / AP25 in $(SCANNET_DEMO_DIR)/eval/results.txt"

bench: build
	$(PY) benchmarks/ops.py
	$(PY) benchmarks/postprocess.py

# On a machine with a GPU (no TensorFlow needed): CUDA kernels against the CPU kernels.
gpu-harness:
	$(PYTHON) tf_ops/gpu_harness/check_cuda_kernels.py --build

clean:
	rm -rf jsnet_tf/ops/lib jsnet_tf/clustering/lib tf_ops/gpu_harness/build .pytest_cache outputs
