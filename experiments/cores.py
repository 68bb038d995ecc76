"""How many jobs and threads fit the cores this process may use: the one count runs and sweeps share."""
from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping


def usable_cores() -> int:
    """Cores this process may run on (a cpuset can allow fewer than os.cpu_count()); the one
    count that run threads and sweep job limits both use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher_cfg: Mapping[str, Any] | None, n_runs: int | None = None) -> int:
    """How many jobs of this sweep run at once on this machine: joblib's n_jobs; every run for
    submitit's local launcher, which starts them all at once (`n_runs` in the sweeper; inside a
    job, the count the sweeper passed down); 1 otherwise (sequential, or SLURM nodes)."""
    target = str((launcher_cfg or {}).get("_target_", ""))
    if "joblib" in target:
        n = int(launcher_cfg.get("n_jobs", -1))  # type: ignore[union-attr]
        return usable_cores() if n <= 0 else n
    if is_local_submitit(launcher_cfg):
        return max(1, n_runs if n_runs is not None else int(os.environ.get("PEFTBENCH_PARALLEL_JOBS", "1")))
    return 1


def job_cpus(launcher_cfg: Mapping[str, Any] | None) -> int | None:
    """CPUs the scheduler gives each job of this launcher, which is also its torch thread count:
    submitit's cpus_per_task, a Ray task's num_cpus (Ray gives a task 1 unless told), and inside a
    SLURM job its SLURM_CPUS_PER_TASK; None where a job has the machine's cores."""
    cfg = launcher_cfg or {}
    if cfg.get("cpus_per_task"):
        return int(cfg["cpus_per_task"])
    ray = cfg.get("ray")
    if isinstance(ray, Mapping):
        return int((ray.get("remote") or {}).get("num_cpus") or 1)
    env = os.environ.get("SLURM_CPUS_PER_TASK")
    return int(env) if env else None


def runs_here(launcher_cfg: Mapping[str, Any] | None) -> bool:
    """Whether this launcher runs the jobs on this machine (sequential, joblib, submitit_local)."""
    target = str((launcher_cfg or {}).get("_target_", ""))
    return not target or target.endswith("BasicLauncher") or "joblib" in target or target.endswith("LocalLauncher")


def is_local_submitit(launcher_cfg: Mapping[str, Any] | None) -> bool:
    return str((launcher_cfg or {}).get("_target_", "")).endswith("LocalLauncher")


def check_parallelism(n_jobs: int, torch_threads: Any, local_submitit: bool = False) -> str | None:
    """None when jobs x threads fits the cores, else the message why it does not."""
    cores = usable_cores()
    if n_jobs > cores and local_submitit:
        return (f"hydra/launcher=submitit_local starts all {n_jobs} runs at once but there are only {cores} cores: "
                f"runs would share cores and every timing would be wrong; use hydra/launcher=parallel "
                f"hydra.launcher.n_jobs<={cores}, or the default sequential launcher")
    if n_jobs > cores:
        return (f"hydra.launcher.n_jobs={n_jobs} but only {cores} cores: jobs would share cores and every "
                f"timing would be wrong; use hydra.launcher.n_jobs<={cores}")
    if isinstance(torch_threads, int) and n_jobs * torch_threads > cores:
        return (f"{n_jobs} jobs x torch_threads={torch_threads} > {cores} cores; each job is clamped to "
                f"{cores // n_jobs} thread(s) (torch_threads=auto does this silently)")
    return None


SLOT_WAIT_S = 0.05


def slot_cpus() -> list[int]:
    """The ids of the CPUs this process may run on: runs with disjoint cpusets never wait."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(usable_cores()))


@contextmanager
def core_slots(threads: int, label: str = "") -> Iterator[None]:
    """Hold `threads` of this machine's core slots (one lock file per CPU this process may use,
    shared by every peftbench process on the host) while a run computes. Two sweeps started at
    once then take turns on the cores instead of running 2 threads each on 2 cores, which halves
    both and makes every timing they record wrong. A run waits, saying so once, until it has all
    its slots: it never runs on fewer threads than planned, since the thread count is part of what
    it measures. Runs wait in line behind an admission lock, so that a run wanting two cores is
    not starved by one-core runs taking each core as it frees."""
    import socket

    from peftbench.experiments.meters.cache import cache_dir

    folder = cache_dir() / "core_slots" / socket.gethostname()  # a shared home holds other hosts' too
    folder.mkdir(parents=True, exist_ok=True)
    cpus = slot_cpus()
    want = min(max(1, threads), len(cpus))
    held: list = []
    with open(folder / "admission.lock", "w") as admission:
        try:
            fcntl.flock(admission, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"{label}waiting for cores: other peftbench runs on this machine hold them", file=sys.stderr, flush=True)
            fcntl.flock(admission, fcntl.LOCK_EX)
        said = False
        while len(held) < want:
            for cpu in cpus:
                if len(held) == want:
                    break
                f = open(folder / f"cpu{cpu}.lock", "w")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append(f)
                except OSError:
                    f.close()
            if len(held) < want:
                if not said:
                    print(f"{label}waiting for cores: other peftbench runs on this machine hold them "
                          f"({want} of {len(cpus)} needed)", file=sys.stderr, flush=True)
                    said = True
                time.sleep(SLOT_WAIT_S)
    try:
        yield
    finally:
        for f in held:
            f.close()
