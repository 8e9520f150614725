# Every user-facing command is a target here; each installs what it needs first.
#
#   make matrix-cnn            validate the shipped pre-trained CNN in-process (ARGS=--from-scratch: train)
#   make spark-cnn             the same on Spark (MASTER=spark://host:port for a cluster)
#   make test-cnn              step 3's checks as graded (test-linear: step 1, test-nn: step 2)
#   make check-submission      every step's checks on your files, one line each, as graded
#   make test                  the quick test tier (a few minutes); make test-all: everything
#
# Variables: DATA=dir  MASTER=url  ITERS=n  BATCH=n  DTYPE=float32|float64  ARGS="..."

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

DATA   ?= data/cifar10-sample
MASTER ?= local[*]
DTYPE  ?= float32
ITERS  ?=
BATCH  ?=
ARGS   ?=
PYTEST_ARGS ?=

MODELS := linear nn cnn
RUN_ARGS = --data $(DATA) --dtype $(DTYPE) $(if $(ITERS),--iters $(ITERS)) $(if $(BATCH),--batch $(BATCH)) $(ARGS)

.PHONY: help install build test test-all lint format clean \
        $(addprefix matrix-,$(MODELS)) $(addprefix spark-,$(MODELS)) $(addprefix test-,$(MODELS))

help:
	@sed -n '1,10p' Makefile
ifneq ($(wildcard bench/__init__.py),)
	@sed -n 's/^#help:/#/p' Makefile
endif

# A virtual environment with the project installed in editable mode (builds the Cython kernels).
$(STAMP): pyproject.toml setup.py util/_kernels.pyx
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# Rebuild the extension in place after editing util/_kernels.pyx.
build: $(STAMP)
	$(PY) setup.py build_ext --inplace

$(addprefix matrix-,$(MODELS)): matrix-%: $(STAMP)
	$(PY) -m matrix $* $(RUN_ARGS)

$(addprefix spark-,$(MODELS)): spark-%: $(STAMP)
	$(PY) -m spark $* --master '$(MASTER)' $(RUN_ARGS)

# One step's checks (tests/test_steps.py, marker step<N>): the tester, forward()'s records,
# lazy forward, one job per iteration, nothing collected, the rules; local[2], no task retries;
# a check still running after 90 s (the grader allows each check 10-30 s) stops the run with the
# stacks (the thread method: interrupting a Spark call would break the session for what follows).
STEP.linear := 1
STEP.nn := 2
STEP.cnn := 3
$(addprefix test-,$(MODELS)): test-%: $(STAMP)
	SPARKNET_TEST_MASTER='local[2]' $(PY) -m pytest -m step$(STEP.$*) tests/test_steps.py \
	    --timeout 90 --timeout-method thread $(PYTEST_ARGS)

.PHONY: check-submission
check-submission: $(STAMP)
	$(PY) -m spark.contract

ifneq ($(wildcard trainer/__init__.py),)  # the trainer's targets (not in the starter)
.PHONY: evaluate $(addprefix train-,$(MODELS))

# Real training (python -m trainer): e.g. make train-cnn DATA=../shared/data/cifar10-jpeg ARGS="--val-split 5000 --epochs 30 --augment"
OUT ?= runs/$*
$(addprefix train-,$(MODELS)): train-%: $(STAMP)
	$(PY) -m trainer $* --data $(DATA) --dtype $(DTYPE) --master '$(MASTER)' --out $(OUT) $(if $(BATCH),--batch $(BATCH)) $(ARGS)

# The evaluation report of a saved model: make evaluate MODEL_FILE=runs/cnn/model.npz
evaluate: $(STAMP)
	$(PY) -m trainer.evaluate $(MODEL_FILE) --data $(DATA) $(ARGS)
endif

# Tests in tiers: the quick tier leaves out the tests marked slow (full grading runs,
# full-data runs) or cluster (a standalone cluster); test-all runs everything (.ci/run).
test: $(STAMP)
	$(PY) -m pytest -m 'not slow and not cluster' $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

ifneq ($(wildcard .ci/lowest.sh),)  # not in the starter
.PHONY: test-lowest
# The Spark test modules on the lowest supported pyspark and numpy (.ci/lowest.txt), in a second
# venv with HEAD's tree and its own kernels under build/lowest/ (.ci/lowest.sh; .ci/run runs it).
test-lowest:
	.ci/lowest.sh $(PYTEST_ARGS)
endif

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

ifneq ($(wildcard bench/__init__.py),)  # the benchmarks (not in the starter)
.PHONY: bench bench-layers profile-cnn compare-modes scaling

# Training-step table: every classifier, batch 100/500/2000, float32/float64, matrix vs
# Spark local[1]/local[2] vs PyTorch (installed here by the bench extra); build/bench/bench.json.
bench: $(STAMP)
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet -e '.[bench]' \
	    || echo 'PyTorch could not be installed: the table will have no PyTorch column'
	$(PY) -m bench.steps $(ARGS)

# The CNN step and each kernel, Cython vs numpy: build/bench/layers.json.
bench-layers: $(STAMP)
	$(PY) -m bench.layers $(ARGS)

# Per-layer forward/backward times of the CNN (and inside conv: im2col, GEMMs, col2im).
profile-cnn: $(STAMP)
	$(PY) -m bench.profile_cnn $(ARGS)

# sync vs avg (K = 1, 5, 20) on 2 partitions: runs/compare-modes/modes.png and summary.txt.
compare-modes: $(STAMP)
	$(PY) -m bench.compare_modes $(ARGS)

# Where a training round's time goes (compute, serialisation, broadcast, aggregation, job
# overhead) on local[1], local[2] and a 2-worker standalone cluster, and a fitted model of
# images/s up to 256 executors: docs/scaling.md and docs/scaling.png, raw runs/scaling/.
#help:   make scaling               per-round time split, local[1]/[2] and a 2-worker cluster, modelled to 256 executors (ARGS=--quick)
scaling: $(STAMP)
	$(PY) -m bench.scaling --data $(DATA) --dtype $(DTYPE) $(if $(BATCH),--batch $(BATCH)) $(ARGS)
endif

ifneq ($(wildcard trainer/__init__.py),)  # the trainer's targets (not in the starter)
.PHONY: pretrained-cnn

# How data/cnn-pretrained.npz was made (needs the full CIFAR-10 tree; about 45 minutes here):
# 150 epochs of the CNN with batch normalisation (cnn-bn), saved folded as the plain CNN, on
# all 50,000 training images with the settings chosen with --val-split 5000 (data/README.md).
PRETRAINED_DATA ?= ../shared/data/cifar10-jpeg
pretrained-cnn: $(STAMP)
	$(PY) -m trainer cnn-bn --data $(PRETRAINED_DATA) --val-split 0 --no-val \
	    --epochs 150 --batch 128 --partitions 2 --mode avg --avg-every 5 --augment \
	    --lr 0.05 --weight-decay 5e-4 --momentum 0.9 --lr-schedule cosine --seed 0 \
	    --master 'local[2]' --checkpoint-every 700 --tta --out runs/pretrained-cnn
	cp runs/pretrained-cnn/model.npz data/cnn-pretrained.npz
endif

# ---------------------------------------------------------------- the assignment (staff only)
STARTER    ?= build/starter
SUBMISSION ?=
GRADE_ARGS ?=

ifneq ($(wildcard grading/grade.py),)
.PHONY: starter grade autograder-bundle

# The student starter: the repo minus staff files, solutions replaced by stubs.
starter: $(STAMP)
	$(PY) -m grading.starter --out $(STARTER)

# Grade a submission (directory or .zip): writes build/grade/<name>/results.json + summary.txt.
grade: $(STAMP)
	@test -n "$(SUBMISSION)" || { echo "usage: make grade SUBMISSION=path/to/dir-or.zip" >&2; exit 2; }
	$(PY) -m grading.grade '$(SUBMISSION)' $(GRADE_ARGS)

# The Gradescope autograder zip (setup.sh, run_autograder, starter tree + grading tools).
autograder-bundle: $(STAMP)
	$(PY) -m grading.grade --bundle build/autograder.zip
endif

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis spark-warehouse
	rm -f util/_kernels.c util/_kernels*.so
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
