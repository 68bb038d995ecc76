"""The Hydra entry behind `peftbench run`."""
from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from peftbench.experiments import distributed, lrsearch, precision, provenance, record, sweep
from peftbench.experiments.run import base_record, execute, prepare, record_failure
from peftbench.experiments.signals import Interrupted
from peftbench.experiments.tracking import Tracker
from peftbench.methods.base import ConfigError
from peftbench.experiments.paths import CONF


def _record_invalid(config: dict[str, Any], error: ConfigError) -> None:
    """Inside a sweep a bad combination is recorded as failed, and the sweep goes on."""
    record_failure(config, f"ConfigError: {error}")


def track_search_result(config: dict[str, Any], rec: dict[str, Any], group: str | None) -> None:
    """The search's final record is a run of its own in W&B (its trials are tagged as trials),
    with the chosen lr beside the final figures."""
    tracker = Tracker.from_config(config)
    if tracker is None:
        return
    tracker.start(rec["run_id"], config, group=group, extra_tags=["protocol:lr_search"])
    tracker.finish(rec)  # its summary's lr is the chosen one


def exit_failed(rec: dict[str, Any]) -> None:
    """A single run that failed exits non-zero (a sweep records it and goes on): 2 for bad input
    found only when the data was read (an unseen label, a missing column), 1 for a crash. The
    failed record is written either way."""
    error = str(rec.get("error") or "failed")
    if error.startswith("ConfigError: "):
        print(f"peftbench: error: {error.removeprefix('ConfigError: ')}", file=sys.stderr)
        sys.exit(2)
    where = record.result_path(rec["config"]["results_dir"], rec["run_id"])
    if rec.get("status") == "diverged":
        print(f"peftbench: run {error} (record in {where})", file=sys.stderr)
        sys.exit(1)
    print(f"peftbench: run failed: {error} ({'traceback' if rec.get('traceback') else 'record'} in {where})", file=sys.stderr)
    sys.exit(1)


CONF_DIR = str(CONF)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain data; a `???` the command line left empty (model=hf's name)
    is one line and exit 2, here in the job, where Hydra would otherwise print its own report."""
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:
        m = re.search(r"Missing mandatory value: (\S+)", str(e))
        key = m.group(1) if m else str(getattr(e, "full_key", "a key"))
        hint = " (model=hf: model.name=ORG/NAME or a model folder)" if key == "model.name" else ""
        print(f"peftbench: error: {key} has no value; set {key}=VALUE on the command line{hint}", file=sys.stderr)
        sys.exit(2)


def thread_cap(launcher: dict[str, Any] | None, multirun: bool) -> tuple[int | None, int]:
    """(most torch threads one job may use, jobs running at once) under this launcher."""
    if not multirun:
        return None, 1
    jobs = sweep.parallel_jobs(launcher)
    if jobs > 1:
        return max(1, sweep.usable_cores() // jobs), jobs
    return sweep.job_cpus(launcher), 1


def run_one(config: dict[str, Any], multirun: bool, cap: int | None = None, group: str | None = None) -> dict[str, Any] | None:
    """prepare -> execute for one config, with tracking and the launcher's thread cap. A bad
    config is recorded as failed in a sweep and exits 2 otherwise."""
    try:
        plan = prepare(config)
    except ConfigError as e:
        if multirun:
            _record_invalid(config, e)
            return record.read(record.result_path(config["results_dir"], record.run_id(config)))
        print(f"peftbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    if cap is not None and plan.threads > cap:
        if isinstance(config.get("torch_threads"), int):
            print(f"peftbench: note: torch_threads={plan.threads} clamped to {cap}: parallel jobs x threads may not exceed the cores", flush=True)
        plan.threads = cap
    skipped = plan.path.exists() and not config.get("force") and record.is_done(plan.path)
    tracker = None if skipped or not plan.world.is_main else Tracker.from_config(config)
    if tracker:
        trial = Path(str(config["results_dir"])).name == lrsearch.TRIALS_DIR
        protocol = "lr_search_trial" if trial else lrsearch.protocol_of({"config": config})
        tracker.start(plan.run_id, config, group=group, extra_tags=[f"protocol:{protocol}"])
    rec = launch_and_wait(plan) if distributed.needs_launch(config) and not skipped else execute(plan)
    if tracker:
        tracker.finish(rec)
    return rec


def launch_and_wait(plan: Any) -> dict[str, Any]:
    """A distributed run from a plain command: torchrun starts one worker per device, rank 0
    writes the record. When torchrun fails and no rank recorded why (a rank killed outright, by
    the OOM killer say), the failure is recorded here, so that a sweep goes on."""
    code, started = distributed.launch(plan.config, plan.run_id, plan.threads)
    fresh = plan.path.exists() and plan.path.stat().st_mtime >= started
    rank0 = record.read(plan.path) if fresh else {}
    if fresh and (code == 0 or rank0.get("status") in ("failed", "diverged")):
        return rank0
    peers = distributed.peer_errors(plan.config["results_dir"], plan.run_id)
    # rank 0 stopped by a signal: torchrun stopping it after another rank died outright, or the
    # ranks preempted while this process was not; which one, nothing here can tell
    stopped = f" (rank 0: {rank0['error']})" if rank0.get("status") == "interrupted" else " and no rank recorded the run (a rank was killed?)"
    rec = base_record(plan)
    rec.update({"status": "failed", "provenance": provenance.collect(plan.device),
                "error": "; ".join(peers) or f"torchrun exited with code {code}{stopped}"})
    record.write_atomic(plan.path, rec)
    distributed.clear_errors(plan.config["results_dir"], plan.run_id)
    print(f"FAILED ({rec['error']}): {plan.path}", flush=True)
    return rec


@contextmanager
def stopped_cleanly() -> Iterator[None]:
    """A stopped run (its record says interrupted) or a result that cannot be written ends the
    process with one line, in a sweep too: the rest of the sweep needs the same start again."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        print(f"peftbench: interrupted by {signal.Signals(signum).name}: the run in flight is recorded as interrupted; "
              f"start the same command again to finish", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    except record.ResultWriteError as e:
        print(f"peftbench: error: {e.strerror}", file=sys.stderr, flush=True)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    config = resolved(cfg)
    precision.resolve_config(config)  # auto -> what this machine computes fast, before any id or search
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    launcher = OmegaConf.to_container(hc.launcher, resolve=False) if multirun else None
    cap, jobs = thread_cap(launcher, multirun)  # type: ignore[arg-type]
    if jobs > 1:
        os.environ["PEFTBENCH_PARALLEL_JOBS"] = str(jobs)
    group = Path(str(hc.sweep.dir)).name if multirun else None
    problem = record.check_results_dir(config["results_dir"])
    if problem:
        print(f"peftbench: error: {problem}", file=sys.stderr)
        sys.exit(2)
    # A shared lock on the results dir while this process may write there: lets a later run
    # tell the temp files of a killed write from those of a live one (sweep.clean_stale_tmp).
    rec = None
    with sweep.results_lock(config["results_dir"]), stopped_cleanly():
        if config.get("lr_search") is not None:
            try:
                done = not config.get("force") and record.is_done(record.result_path(config["results_dir"], record.run_id(config)))
                rec = lrsearch.search(config, lambda c: run_one(c, multirun, cap, group))
                if not done:
                    track_search_result(config, rec, group)
            except ConfigError as e:
                if not multirun:
                    print(f"peftbench: error: {e}", file=sys.stderr)
                    sys.exit(2)
                _record_invalid(config, e)
        else:
            rec = run_one(config, multirun, cap, group)
    if not multirun and rec and rec.get("status") in ("failed", "diverged"):
        exit_failed(rec)
    if multirun:
        manifest = os.environ.get(sweep.MANIFEST_ENV) or str(Path(str(hc.sweep.dir)) / ".sweep.json")
        line = sweep.progress_line(manifest)
        if line:
            print(line, flush=True)
