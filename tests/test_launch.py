"""Launchers: joblib in parallel with cores split between jobs, submitit end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench.experiments.sweep import check_parallelism, usable_cores

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
TINY = ["model=tiny-llama", "steps=2", "measure.latency=false", "progress=false", "task.n_train=64", "task.n_validation=16", "task.n_test=16"]


def peftbench(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftbench", "run", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def results(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def assert_same_numbers_as_a_plain_run(rec: dict, tmp_path: Path) -> None:
    """A launched run equals the same config run in this process at the thread count it ran with."""
    from peftbench.experiments.run import execute, prepare
    from tests.conftest import compose

    threads = rec["provenance"]["torch_threads"]
    ref = execute(prepare(compose([f"method={rec['method']}", f"torch_threads={threads}", f"results_dir={tmp_path / 'plain'}", *TINY])))
    assert rec["loss_curve"] == ref["loss_curve"] and rec["metrics"] == ref["metrics"], rec["method"]


def test_check_parallelism_refuses_and_clamps():
    cores = usable_cores()
    assert check_parallelism(1, "auto") is None
    assert "n_jobs" in check_parallelism(cores + 1, "auto")
    assert "clamped" in check_parallelism(1, cores + 1)


@pytest.mark.slow
def test_joblib_refuses_more_jobs_than_cores(tmp_path, forked_cli):
    out = forked_cli.run(["run", "-m", "method=lora", "hydra/launcher=parallel", f"hydra.launcher.n_jobs={usable_cores() + 1}", f"results_dir={tmp_path}", *TINY], env=ENV)
    assert out.returncode != 0
    assert "cores" in (out.stdout + out.stderr)
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_submitit_local_runs_end_to_end(tmp_path, forked_cli):
    out = forked_cli.run(["run", "-m", "method=lora", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                          "hydra.launcher.cpus_per_task=1", f"results_dir={tmp_path}", *TINY], env=ENV, timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [rec] = results(tmp_path)
    assert rec["status"] == "ok" and rec["method"] == "lora"
    assert rec["provenance"]["torch_threads"] == 1  # cpus_per_task caps the threads of the job
    assert list(tmp_path.glob(".hydra/*/.submitit/*"))  # it really went through submitit
    assert_same_numbers_as_a_plain_run(rec, tmp_path)


@pytest.mark.slow
@pytest.mark.whole_machine
@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores")
def test_joblib_two_jobs_split_the_cores(tmp_path):
    out = peftbench("-m", "method=lora,linear_probe", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                    f"results_dir={tmp_path}", *TINY)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    recs = results(tmp_path)
    assert sorted(r["method"] for r in recs) == ["linear_probe", "lora"]
    assert all(r["status"] == "ok" for r in recs)
    assert {r["provenance"]["torch_threads"] for r in recs} == {usable_cores() // 2}
    assert "[sweep] 2 runs, 0 already done, 2 to launch, 2 at a time" in out.stdout
    for rec in recs:
        assert_same_numbers_as_a_plain_run(rec, tmp_path)


def test_the_thread_count_that_ran_is_part_of_the_setting():
    """torch_threads=auto resolves to 2 sequentially and to 1 under a 2-job launcher on 2 cores;
    the count sets the order of CPU reductions, so it splits rows, and only on CPU."""
    from peftbench.analysis.load import setting_items

    def items(ran: int, asked, device: str = "cpu") -> dict:
        return setting_items({"config": {"torch_threads": asked, "steps": 2, "method": {"name": "lora"}},
                              "provenance": {"device": device, "torch_threads": ran}})

    assert items(2, "auto") != items(1, "auto")
    assert items(1, "auto") == items(1, 1)  # the same numerics, however asked for
    assert items(2, "auto", "cuda:0") == items(1, "auto", "cuda:0")


def test_submitit_local_counts_every_run_as_running_at_once(monkeypatch):
    """submitit's local executor starts all runs together: they split the cores, and more runs
    than cores are refused like joblib's n_jobs."""
    from peftbench.experiments.sweep import parallel_jobs

    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
    assert parallel_jobs(local, 3) == 3 and parallel_jobs({"_target_": "x.SlurmLauncher"}, 3) == 1
    monkeypatch.setenv("PEFTBENCH_PARALLEL_JOBS", "2")
    assert parallel_jobs(local) == 2  # inside a job: the sweeper's count, passed down
    assert "submitit_local starts all" in check_parallelism(usable_cores() + 1, "auto", local_submitit=True)


def test_each_scheduled_job_gets_the_cpus_it_asked_for_as_threads(monkeypatch):
    from peftbench.experiments.sweep import job_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert job_cpus({"cpus_per_task": 4}) == 4  # submitit (SLURM)
    assert job_cpus({"ray": {"remote": {"num_cpus": 3}}}) == 3
    assert job_cpus({"ray": {"init": {"address": "auto"}}}) == 1  # Ray gives a task one CPU unless told
    assert job_cpus({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}) is None
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")  # inside a SLURM job
    assert job_cpus(None) == 2


def test_a_launcher_that_cannot_start_says_why_in_one_line():
    from hydra.errors import InstantiationException

    from peftbench.hydra_run import hydra_error_line
    from peftbench.methods.base import ConfigError

    try:
        raise InstantiationException("Error in call to target 'x':\nConfigError('...')") from ConfigError("needs Ray: make setup-ray")
    except InstantiationException as e:
        assert hydra_error_line(e, []) == "needs Ray: make setup-ray"
