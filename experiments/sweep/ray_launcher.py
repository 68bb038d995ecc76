"""Hydra's Ray launcher (hydra-ray-launcher) for a Ray cluster that is already running, with what a
peftbench sweep needs on top of it (conf/hydra/launcher/ray_cluster.yaml):

* joining a cluster: hydra-ray-launcher 1.2.2 gives `ray.init` an object store size, which Ray 2
  refuses when it joins an existing cluster, so none is given when an address is;
* a run whose worker died (killed, out of memory, its node lost) is recorded as failed with the
  reason, unless it recorded itself; the sweep goes on collecting the other runs, and its next start
  runs the dead one again (from its last checkpoint where it saved one);
* each run is one Ray task with `num_cpus` CPUs, which is also its torch thread count
  (experiments.cores.job_cpus).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf, open_dict

from peftbench.experiments import record
from peftbench.experiments.sweep.arms import task_container
from peftbench.methods.base import ConfigError

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _HydraRayLauncher
except ImportError as e:  # pragma: no cover - depends on the optional extra
    raise ConfigError("hydra/launcher=ray_cluster needs Ray and Hydra's Ray launcher: "
                      "make setup-ray (or pip install 'peftbench[ray]' and pip install --no-deps hydra-ray-launcher==1.2.2)") from e


class RayLauncher(_HydraRayLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        import ray
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
        from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray

        setup_globals()
        init = {k: v for k, v in OmegaConf.to_container(self.ray_cfg.init, resolve=True).items() if v is not None}
        if not init.get("address"):
            init.setdefault("object_store_memory", 78_643_200)  # the plugin's own default for a local Ray
        if not ray.is_initialized():
            ray.init(**init)
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            print(f"[sweep] #{idx} on Ray: {' '.join(filter_overrides(overrides))}", flush=True)
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"job_id_for_{idx}"
                sweep_config.hydra.job.num = idx
            config = task_container(sweep_config)
            path = record.result_path(config["results_dir"], record.run_id(config))
            jobs.append((config, path, file_state(path), launch_job_on_ray(self.hydra_context, self.ray_cfg.remote, sweep_config,
                                                                    self.task_function, Singleton.get_state())))
        returns = []
        for config, path, before, job in jobs:
            try:
                returns.append(ray.get(job))
            except ray.exceptions.RayError as e:
                if file_state(path) != before:  # the run recorded itself (interrupted, failed): its words stand
                    print(f"[sweep] the Ray task of {path.name} ended with {type(e).__name__}; its record says why", flush=True)
                elif isinstance(e, WORKER_DEATHS):
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    print(f"[sweep] the Ray worker of {path.name} died: {type(e).__name__}{': ' + first if first else ''}", flush=True)
                    record_dead_worker(config, path, e)
                else:
                    raise
                # the sweep reads records, not return values: a FAILED return would make the sweeper
                # raise before the other runs are collected
                ret = JobReturn()
                ret.status, ret.return_value, ret.overrides = JobStatus.COMPLETED, None, []
                returns.append(ret)
        return returns


def _worker_deaths() -> tuple[type, ...]:
    import ray.exceptions as rex

    names = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ActorDiedError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


WORKER_DEATHS = _worker_deaths()


def file_state(path: Path) -> tuple[int, int] | None:
    """What changes when a record is written (a rename gives a new inode), read from the file
    itself: no clock of this machine is compared with another's."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def record_dead_worker(config: dict[str, Any], path: Path, error: BaseException) -> None:
    """Record the run of a job whose Ray worker died, before the run could record itself, as
    failed with the reason; an ok record it had from before stands."""
    from peftbench.experiments.run import record_failure

    if record.existing(path)[0] == "ok":
        return
    # Ray's own message (the actor's address, its exit detail) went to the sweep's output above;
    # the record says what happened and what to do
    record_failure(config, f"the Ray worker running it died before it recorded the run ({type(error).__name__}); "
                           f"start the sweep again to run it", rid=path.stem)
