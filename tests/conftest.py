"""Shared fixtures. Tests run offline: nothing is downloaded."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision=auto resolves to fp32 in tests on every CPU, so that no test depends on bf16 being fast
# and the suite runs the same on an AVX2-only and an AVX512-BF16 machine; tests of bf16 and of the
# probe itself set what they need (tests/test_run_cost.py).
os.environ.setdefault("PEFTBENCH_BF16_PROBE", "slow")


def _pin_to_own_cores() -> None:
    """Under pytest-xdist (`make test` runs `-n 2` on two cores), each worker gets a disjoint share
    of the cores, as a SLURM job gets its cpuset: its runs then size their torch threads to that
    share, and the other worker's work is on cores outside it, so no timing or contention figure
    counts it. Must run before torch is imported."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    # a process the worker started inherits both its cores and this variable
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity") or os.environ.get("PEFTBENCH_TEST_CPUS"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > len(cpus):
        raise RuntimeError(f"pytest -n {workers} on {len(cpus)} cores: workers would share cores; use -n {len(cpus)} or fewer")
    per = len(cpus) // workers
    index = int(worker[2:]) % workers  # a worker that replaces a crashed one gets the next id
    mine = cpus[index * per:(index + 1) * per]
    os.sched_setaffinity(0, mine)
    os.environ["PEFTBENCH_TEST_CPUS"] = ",".join(map(str, mine))


_pin_to_own_cores()
# Peak-FLOPs measurements taken under a busy test run must not land in the user's cache.
# The folder goes when this process exits (SmolLM2's converted checkpoint alone is 533 MB): every
# process that writes into it (a run, a fork of the CLI driver) is one this session started and
# waited for; a folder the caller named is the caller's.
if "PEFTBENCH_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["PEFTBENCH_CACHE"] = tempfile.mkdtemp(prefix="peftbench-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PEFTBENCH_CACHE"], ignore_errors=True)

from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

# A small slice of the built-in task so that a run takes seconds.
SMALL_TASK = ["task.n_train=64", "task.n_validation=16", "task.n_test=32"]
FAST = ["measure.latency=false", "measure.serving.enabled=false", "measure.adapter_size=false", "progress=false", "eval_batch_size=32"]


def compose(overrides: list[str], searchpath: list[str] | None = None) -> dict[str, Any]:
    """The resolved config a `peftbench run OVERRIDES` would see."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    extra = [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[*overrides, *extra])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="session")
def forked_cli():
    """`peftbench` command lines, each a fork of one process that imported everything once
    (tests/forked_cli.py): a bad-input case costs a fraction of a second instead of three."""
    from tests.forked_cli import ForkedCli

    cli = ForkedCli({**os.environ, "HF_HUB_OFFLINE": "1"})
    yield cli
    cli.close()


@pytest.fixture(scope="session", autouse=True)
def _quiet() -> None:
    from peftbench.experiments.quiet import quiet

    quiet()


@pytest.fixture
def run_small(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Run one small training in-process and return its record."""
    from peftbench.experiments.run import execute, prepare

    def _run(*overrides: str, fast: bool = True, searchpath: list[str] | None = None) -> dict[str, Any]:
        config = compose([*SMALL_TASK, *(FAST if fast else []), f"results_dir={tmp_path / 'results'}", *overrides], searchpath)
        return execute(prepare(config))

    return _run


# Files whose tests share one live cluster started by a module fixture (a SLURM controller, a Ray
# head: one per machine). Under pytest-xdist all of a file's tests go to one worker, in order.
ONE_WORKER_FILES = ("tests/test_slurm.py", "tests/test_ray.py")
# Files whose tests share a costly module or session fixture (a converted SmolLM2, a report built
# from records, runs of a generation task): sent whole to one worker, which builds it once. Split
# across two workers, each built its own, or waited on the other's lock with its core idle (the
# SmolLM2 conversion: 43 s on one worker, 34 s of waiting on the other, on a 2-core Zen 3).
SHARED_FIXTURE_FILES = ("tests/test_llm.py", "tests/test_analysis_report.py", "tests/test_analysis_tasks.py",
                        "tests/test_analysis_tables.py", "tests/test_analysis_claims.py", "tests/test_analysis_load_stats.py",
                        "tests/test_analysis_measurement.py", "tests/test_serving.py", "tests/test_tasks_generation.py",
                        "tests/test_tasks_classification.py", "tests/test_lm_eval_hook.py")


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) knows no such hook
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` (make test): one test at a time to whichever worker is free, except the
    files in ONE_WORKER_FILES, each sent whole to one worker and first, so that their minutes of
    waiting on daemons overlap the rest, and those in SHARED_FIXTURE_FILES, each sent whole to one
    worker. xdist's own loadgroup reads `xdist_group` marks by rewriting node ids, which pytest 9
    no longer lets it do (its groups split across workers)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerPerCluster(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in ONE_WORKER_FILES or path in SHARED_FIXTURE_FILES else nodeid

    return OneWorkerPerCluster(config, log)


# A test that asks for one of these trains a model or starts a `peftbench` process: it is `slow`
# whether or not it says so, and `make test-fast` leaves it out.
SLOW_FIXTURES = {"run_small", "forked_cli"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `whole_machine` need every core of the machine (two processes on two cores):
    inside an xdist worker, which holds only its share, they skip and say where they run (`make
    test` runs them in a second pass without -n). Under another `--dist` than loadgroup, a file in
    ONE_WORKER_FILES could be split across workers, each starting its own cluster beside (and
    stopping) the other's: its tests skip and say how to run them."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and "slow" not in item.keywords:
            item.add_marker(pytest.mark.slow)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    skip = pytest.mark.skip(reason="needs every core: runs in make test's second pass, without -n")
    split = pytest.mark.skip(reason="shares one cluster with its file's other tests: run with --dist loadgroup "
                                    "(make test), or without -n")
    for item in items:
        if "whole_machine" in item.keywords:
            item.add_marker(skip)
        elif not config.getoption("loadgroup", False) and item.nodeid.split("::", 1)[0] in ONE_WORKER_FILES:
            item.add_marker(split)
