"""Sweeps on a Ray cluster that is already running: a head started on 127.0.0.1 (`ray start
--head`), reached by address through `hydra/launcher=ray_cluster` (Hydra's Ray launcher,
experiments/sweep/ray_launcher.py). Skipped, with the reason, where Ray is not installed
(`make setup-ray`)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftbench.experiments import checkpoint
from tests.forked_cli import stop_group

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
TINY = ["model=tiny-llama", "measure.latency=false", "progress=false", "task.n_train=64", "task.n_validation=16",
        "task.n_test=16", "precision=fp32"]

# Under pytest-xdist one worker runs this file's tests on the one head its fixture starts
# (tests/conftest.py, ONE_WORKER_FILES).
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="Ray is an optional extra: make setup-ray")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """The address of a Ray head on this machine with 2 CPUs, stopped afterwards. `ray stop` stops
    every Ray process of the machine, so a machine that already runs Ray is left alone."""
    if subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True).returncode == 0:
        pytest.skip("a Ray cluster already runs on this machine; these tests start and stop their own")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                          "--include-dashboard=false", "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.skip(f"the Ray head did not start: {(out.stderr or out.stdout).strip()[-300:]}")
    yield f"127.0.0.1:{port}", env
    subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


# The sweeps are forks of the session's warm driver (tests/forked_cli.py); the Ray workers that run
# the jobs are processes of Ray's own.
def sweep_args(address: str, *args: str) -> list[str]:
    return ["run", "-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}", *TINY, *args]


def records(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def test_a_sweep_runs_on_the_cluster_one_cpu_per_run(head, tmp_path, forked_cli):
    address, env = head
    out = forked_cli.run(sweep_args(address, "method=lora,linear_probe", "seed=0,1", "steps=2", f"results_dir={tmp_path}"), env=env, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    recs = records(tmp_path)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    assert {(r["method"], r["seed"]) for r in recs} == {(m, s) for m in ("lora", "linear_probe") for s in (0, 1)}
    assert all(r["provenance"]["torch_threads"] == 1 for r in recs)  # num_cpus=1: one thread per run
    from peftbench.experiments.run import execute, prepare
    from tests.conftest import compose

    lora = next(r for r in recs if r["method"] == "lora" and r["seed"] == 0)
    plain = execute(prepare(compose(["method=lora", "steps=2", *TINY, "torch_threads=1", f"results_dir={tmp_path / 'plain'}"])))
    assert lora["loss_curve"] == plain["loss_curve"] and lora["metrics"] == plain["metrics"]
    again = forked_cli.run(sweep_args(address, "method=lora,linear_probe", "seed=0,1", "steps=2", f"results_dir={tmp_path}"), env=env, timeout=300)
    assert "[sweep] 4 runs, 4 already done, 0 to launch" in again.stdout


def test_a_killed_worker_leaves_a_failed_record_and_the_next_start_finishes_the_run(head, tmp_path, forked_cli):
    address, env = head
    run = ["method=lora", "steps=160", "checkpoint_every_steps=40", f"results_dir={tmp_path}"]
    proc = forked_cli.start(sweep_args(address, *run), env=env, new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / checkpoint.FOLDER).glob("*.pt")):
            assert time.monotonic() < deadline and proc.running(), "no checkpoint was written"
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-f", "ray::_run_job"], capture_output=True, text=True).stdout.split()
        assert len(workers) == 1, workers
        os.kill(int(workers[0]), signal.SIGKILL)  # as the OOM killer or a lost node would
        out = proc.wait(120)
    finally:
        if proc.running():
            stop_group(proc.group)
    [rec] = records(tmp_path)
    assert rec["status"] == "failed" and "Ray worker" in rec["error"] and "start the sweep again" in rec["error"], \
        (out.stdout + out.stderr)[-2000:]

    again = forked_cli.run(sweep_args(address, *run), env=env, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    [rec] = records(tmp_path)
    assert rec["status"] == "ok" and rec["checkpoint"]["resumed_from_step"] >= 40
