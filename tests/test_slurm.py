"""Sweeps through a real SLURM scheduler: a one-node cluster on this machine
(scripts/slurm_local.sh: munge, slurmdbd on MariaDB, slurmctld, slurmd), reached through Hydra's
submitit launcher exactly as on a cluster (`hydra/launcher=slurm`). Skipped, with the reason, where
the cluster cannot be started (no root, no apt)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from peftbench.experiments import checkpoint
from tests.conftest import compose
from tests.forked_cli import stop_group

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
TINY = ["model=tiny-llama", "measure.latency=false", "progress=false", "task.n_train=64", "task.n_validation=16",
        "task.n_test=16", "precision=fp32"]
# one CPU and a little memory per job
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.gpus_per_node=0"]

# Under pytest-xdist one worker runs this file's tests, in order, on the one cluster its fixture
# starts (tests/conftest.py, ONE_WORKER_FILES): the daemons and their jobs share that worker's core.
pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    """The environment that reaches the local cluster; the cluster is stopped afterwards."""
    if not SCRIPT.exists() or os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (scripts/slurm_local.sh start)")
    # the node declares 4 CPUs, so that 1-CPU jobs could run 4 at once: throttling is then visible
    out = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PEFTBENCH_SLURM_CPUS": "4"})
    if out.returncode != 0:
        pytest.skip(f"the local SLURM cluster did not start: {(out.stderr or out.stdout).strip()[-300:]}")
    conf = next(line.split("=", 1)[1] for line in out.stdout.splitlines() if line.startswith("SLURM_CONF="))
    env = {**os.environ, "SLURM_CONF": conf, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    yield env
    subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


# The sweeps themselves are forks of the session's warm driver (tests/forked_cli.py), which spares
# each the imports a launcher pays for at its start; the jobs SLURM starts are processes of their own.
def sweep(forked_cli, env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return forked_cli.run(["run", "-m", *SLURM, *TINY, *args], env=env, timeout=timeout)


def start_sweep(forked_cli, env: dict, *args: str):
    return forked_cli.start(["run", "-m", *SLURM, *TINY, *args], env=env, new_session=True)


def sacct(env: dict, *args: str) -> list[dict[str, str]]:
    """Accounting rows (every job step of the allocation left out), as dicts."""
    fields = "JobID,JobName,State,Start,End,Reason"
    out = subprocess.run(["sacct", "-a", "-X", "-P", "-n", f"--format={fields}", *args], env=env,
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines() if line]


def assert_same_numbers_as_a_plain_run(rec: dict, tmp_path: Path, run: list[str]) -> None:
    """A run that went through SLURM (and a requeue) equals the same config run in this process."""
    from peftbench.experiments.run import execute, prepare

    plain = execute(prepare(compose([*run, *TINY, "torch_threads=1", f"results_dir={tmp_path / 'plain'}"])))
    assert rec["loss_curve"] == plain["loss_curve"] and rec["metrics"] == plain["metrics"]


def records(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def running_job(env: dict) -> str | None:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split()
    return out[0] if out else None


def test_a_sweep_goes_through_sbatch_throttled_into_the_shared_folder(cluster, tmp_path, forked_cli):
    """4 runs as one job array, at most two at a time (array_parallelism=2, on a node with room for
    four), written by concurrent jobs into the one results folder they share, every record ok; a
    second start submits nothing."""
    out = sweep(forked_cli, cluster, "method=lora", "seed=0,1,2,3", "steps=2", "hydra.launcher.array_parallelism=2",
                "hydra.launcher.timeout_min=5", f"results_dir={tmp_path}")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    recs = records(tmp_path)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    assert {(r["method"], r["seed"]) for r in recs} == {("lora", 0), ("lora", 1), ("lora", 2), ("lora", 3)}
    assert all(r["provenance"]["torch_threads"] == 1 for r in recs)  # cpus_per_task is the job's thread count

    scripts = list(tmp_path.glob(".hydra/*/.submitit/*/*_submission.sh"))
    assert scripts and "#SBATCH --array=0-3%2" in scripts[0].read_text()
    array = scripts[0].name.split("_")[0]  # <array job id>_submission.sh

    # the launcher has each result as soon as the job wrote it; accounting hears of the job's end after
    def array_tasks_completed():
        rows = [row for row in sacct(cluster, "-j", array) if "_" in row["JobID"]]
        return rows if len(rows) == 4 and all(row["State"] == "COMPLETED" for row in rows) else None

    tasks = wait_for(array_tasks_completed, 60, "accounting to show the 4 array tasks completed", every=1)
    spans = [(datetime.fromisoformat(row["Start"]), datetime.fromisoformat(row["End"])) for row in tasks]
    running = [sum(start <= t < end for start, end in spans) for t, _ in spans]  # jobs running as each began
    assert max(running) == 2, spans  # two at once, never more

    again = sweep(forked_cli, cluster, "method=lora", "seed=0,1,2,3", "steps=2", "hydra.launcher.array_parallelism=2",
                  "hydra.launcher.timeout_min=5", f"results_dir={tmp_path}")
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "[sweep] 4 runs, 4 already done, 0 to launch" in again.stdout
    assert len(list(tmp_path.glob(".hydra/*/.submitit/*/*_submission.sh"))) == 1  # nothing was submitted
    lora = next(r for r in recs if r["method"] == "lora" and r["seed"] == 0)
    assert_same_numbers_as_a_plain_run(lora, tmp_path, ["method=lora", "steps=2"])


def test_a_preempted_run_is_requeued_and_resumes_from_its_checkpoint(cluster, tmp_path, forked_cli):
    """`scontrol requeue` on a job in training: the run is recorded interrupted (never ok), the job
    runs again, resumes at its last checkpoint and ends ok, with the numbers of an unstopped run."""
    run = ["method=lora", "steps=160", "checkpoint_every_steps=40"]
    proc = start_sweep(forked_cli, cluster, *run, "hydra.launcher.timeout_min=10", f"results_dir={tmp_path}")
    try:
        saved = wait_for(lambda: next(iter((tmp_path / checkpoint.FOLDER).glob("*.pt")), None), 120, "a first checkpoint")
        job = running_job(cluster)
        assert job, "the job with a checkpoint is not running"
        subprocess.run(["scontrol", "requeue", job], env=cluster, check=True, capture_output=True)
        seen = set()

        def finished():
            for path in tmp_path.glob("*.json"):
                seen.add(json.loads(path.read_text())["status"])
            return not proc.running()

        wait_for(finished, 240, "the requeued job", every=0.1)
        out = proc.wait(30)
    finally:
        if proc.running():
            stop_group(proc.group)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [rec] = records(tmp_path)
    assert rec["status"] == "ok"
    assert seen <= {"interrupted", "ok"} and "interrupted" in seen, seen
    assert rec["checkpoint"]["resumed_from_step"] >= 40
    assert not saved.exists()
    history = wait_for(lambda: (rows := sacct(cluster, "-D", "-j", job)) and rows[-1]["State"] == "COMPLETED" and rows, 60,
                       "accounting to show the job completed", every=1)
    assert [row["State"] for row in history].count("REQUEUED") == 1, history
    assert_same_numbers_as_a_plain_run(rec, tmp_path, run)


def test_a_run_at_its_time_limit_fails_with_the_reason_and_the_next_start_finishes_it(cluster, tmp_path, forked_cli):
    """The time-limit warning (USR2, which SLURM sends signal_delay_s before the limit for submitit)
    ends a run that may not be requeued (max_num_timeout=0): it is recorded failed, saying why and
    what to do, and keeps its checkpoint; the next start, with a longer limit, resumes it. The
    warning is sent by hand once the run has a checkpoint (`scancel --signal=USR2`). The limit is 5
    minutes with the warning 30 s before it, so that SLURM does not send its own first (at a 1-minute
    limit it sent it 22 s in); submitit still takes the job as timed out, as it does any job under
    10 minutes."""
    run = ["method=lora", "steps=160", "checkpoint_every_steps=40", f"results_dir={tmp_path}"]
    proc = start_sweep(forked_cli, cluster, *run, "hydra.launcher.timeout_min=5", "hydra.launcher.signal_delay_s=30",
                       "hydra.launcher.max_num_timeout=0")
    try:
        wait_for(lambda: next(iter((tmp_path / checkpoint.FOLDER).glob("*.pt")), None), 120, "a first checkpoint")
        job = running_job(cluster)
        assert job, "the job with a checkpoint is not running"
        subprocess.run(["scancel", "--signal=USR2", job], env=cluster, check=True, capture_output=True)
        out = proc.wait(120)
    finally:
        if proc.running():
            stop_group(proc.group)
    [rec] = records(tmp_path)
    assert rec["status"] == "failed", (out.stdout + out.stderr)[-3000:]
    assert "time limit" in rec["error"] and "timeout_min" in rec["error"] and "resumes from its last checkpoint" in rec["error"]
    stopped_at = checkpoint.load(checkpoint.path_for(tmp_path, rec["run_id"]), rec["run_id"], 160)
    assert stopped_at is not None

    again = sweep(forked_cli, cluster, *run, "hydra.launcher.timeout_min=10")
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "[sweep] 1 runs, 0 already done, 1 to launch" in again.stdout
    [rec] = records(tmp_path)
    assert rec["status"] == "ok" and rec["checkpoint"]["resumed_from_step"] >= stopped_at["step"]


def test_stop_leaves_no_daemon_it_started(cluster):
    """Last in this file: stopping the cluster ends every daemon the script started, munged
    included (a munged that was running before the start is the machine's and is left alone)."""
    folder = Path(cluster["SLURM_CONF"]).parent
    pids = {f.stem: int(f.read_text()) for f in folder.glob("*.pid") if f.read_text().strip().isdigit()}
    assert {"slurmctld", "slurmd"} <= set(pids)  # and munge, where the script started it
    out = subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    alive = {name: pid for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}
    assert not alive, f"still running after stop: {alive}"
