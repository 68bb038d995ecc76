"""Resume: a sweep killed partway and started again runs only what is missing, leaves one
complete, schema-valid result per run, and cleans up temp files of killed writes (safely)."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from peftbench.experiments.record import schema_problems
from peftbench.experiments.sweep import LOCK_NAME, clean_stale_tmp, results_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
METHODS = ["lora", "linear_probe", "houlsby"]
SMALL = ["task.n_train=64", "task.n_validation=16", "task.n_test=16"]


def sweep_cmd(results: Path) -> list[str]:
    return [sys.executable, "-m", "peftbench", "run", "-m", f"method={','.join(METHODS)}", "model=tiny-llama",
            "steps=2", "measure.latency=false", "progress=false", *SMALL, f"results_dir={results}"]


@pytest.mark.slow
def test_killed_sweep_resumes_with_only_the_missing_runs(tmp_path, forked_cli):
    # both starts fork the session's warm driver (tests/forked_cli.py); the first in a process
    # group of its own, killed as the OOM killer or a lost node would
    proc = forked_cli.start(sweep_cmd(tmp_path)[3:], env=ENV, new_session=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("*.json")) and time.time() < deadline and proc.running():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(60).returncode == -signal.SIGKILL
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")}
    assert 1 <= len(first) < len(METHODS), "the kill must land partway through the sweep"
    # what a write killed between mkstemp and rename leaves: a partial temp file
    stale = tmp_path / f".{next(iter(first))}.k1ll3d.tmp"
    stale.write_text('{"schema_version": 1, "run_id": "tru')

    out = forked_cli.run(sweep_cmd(tmp_path)[3:], env=ENV, timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert f"[sweep] {len(METHODS)} runs, {len(first)} already done, {len(METHODS) - len(first)} to launch" in out.stdout
    assert f"{len(METHODS)}/{len(METHODS)} finished: {len(METHODS)} done, 0 failed, 0 remaining" in out.stdout

    files = sorted(tmp_path.glob("*.json"))
    recs = [json.loads(p.read_text()) for p in files]  # none corrupt
    assert sorted(r["method"] for r in recs) == sorted(METHODS)  # exactly one result per run
    for r in recs:
        assert r["status"] == "ok" and schema_problems(r) == []
    assert {p.name: p.stat().st_mtime_ns for p in files if p.name in first} == first  # done runs not re-run
    assert not list(tmp_path.rglob("*.tmp"))  # the stale temp file is gone

    # a run of the resumed start gives the numbers it gives when run on its own
    from peftbench.experiments.run import execute, prepare
    from tests.conftest import compose

    resumed = next(r for p, r in zip(files, recs) if p.name not in first)
    plain = execute(prepare(compose([f"method={resumed['method']}", "model=tiny-llama", "steps=2", "measure.latency=false",
                                     "progress=false", *SMALL, f"torch_threads={resumed['provenance']['torch_threads']}",
                                     f"results_dir={tmp_path / 'plain'}"])))
    assert plain["loss_curve"] == resumed["loss_curve"] and plain["metrics"] == resumed["metrics"]


def test_stale_tmp_cleanup_spares_live_writers(tmp_path):
    old = tmp_path / ".a.json.old1.tmp"
    fresh = tmp_path / ".b.json.new1.tmp"
    for p in (old, fresh):
        p.write_text("{")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # another peftbench process is running on this results dir
    try:
        with results_lock(tmp_path) as alone:
            assert not alone
        assert not old.exists() and fresh.exists()  # only the one no live write can own
    finally:
        os.close(fd)
    with results_lock(tmp_path) as alone:  # nobody else: every temp file is from a dead writer
        assert alone
    assert not fresh.exists()
    assert clean_stale_tmp(tmp_path, alone=False) == []


def _interrupt_args(results: Path) -> list[str]:
    return ["run", "-m", "method=lora,linear_probe", "model=tiny-llama", "steps=2",
            "measure.latency=false", "progress=false", *SMALL, f"results_dir={results}"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_sweep_records_interrupted_and_the_next_start_finishes(sig, tmp_path, forked_cli):
    # an empty peak cache makes the first run spend over a second in the probe: the signal lands in flight
    env = {**ENV, "PEFTBENCH_CACHE": str(tmp_path / "cache")}
    results = tmp_path / "results"
    # a fork of the warm driver, with a fresh interpreter's dispositions (tests/forked_cli.py), in a
    # process group of its own, as a terminal's foreground job is
    proc = forked_cli.start(_interrupt_args(results), env=env, new_session=True)
    deadline = time.time() + 120
    while not list(results.glob(".claims/*.lock")) and time.time() < deadline and proc.running():
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(proc.group, sig)  # as a terminal's Ctrl-C or a scheduler's kill reaches the process group
    done = proc.wait(120)
    out, err = done.stdout, done.stderr
    assert done.returncode == 128 + sig, (out + err)[-3000:]
    assert [line for line in err.splitlines() if line.startswith("peftbench:")] == [
        f"peftbench: interrupted by {signal.Signals(sig).name}: the run in flight is recorded as interrupted; "
        f"start the same command again to finish"]
    recs = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert [r["status"] for r in recs] == ["interrupted"], "no ok record for the run in flight, and the sweep stopped"
    assert schema_problems(recs[0]) == []

    again = forked_cli.run(_interrupt_args(results), env=env, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "[sweep] 2 runs, 0 already done, 2 to launch" in again.stdout
    assert sorted(json.loads(p.read_text())["status"] for p in results.glob("*.json")) == ["ok", "ok"]


@pytest.mark.slow
def test_two_identical_sweeps_at_once_train_each_run_once(tmp_path, forked_cli):
    procs = [forked_cli.start(sweep_cmd(tmp_path)[3:], env=ENV) for _ in range(2)]  # two processes, running together
    done = [p.wait(600) for p in procs]
    for d in done:
        assert d.returncode == 0, (d.stdout + d.stderr)[-3000:]
    outs = [(d.stdout, d.stderr) for d in done]
    trained = [line for out, _ in outs for line in out.splitlines() if line.startswith("ok: ")]
    assert len(trained) == len(METHODS), "each run trains once, in one of the two sweeps"
    recs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["method"] for r in recs) == sorted(METHODS)
    assert all(r["status"] == "ok" and schema_problems(r) == [] for r in recs)
