"""The sweeper behind `peftbench run -m`: Hydra's basic grid, plus

* arms:   a union of small grids (`hydra.sweeper.arms`), each crossed with `hydra.sweeper.params`
          and the command line. This is how paired choices are written: Hydra's own grid is
          cartesian, but LoRA's rank and a bottleneck adapter's size are different knobs of
          different methods, so `ranks` lists one arm per method family (conf/sweep/ranks.yaml).
* dedupe: jobs that compose to the same run id run once (e.g. lora r8 attn_qv in three presets).
* resume: jobs whose ok result already exists are not launched at all (force=true launches them);
          run.execute() skips them anyway, but a SLURM job per finished run would be waste.
* cleanup: temp files left by a write that was killed are removed, safely (see clean_stale_tmp).
* a manifest (<sweep dir>/.sweep.json; dot-named so that report loaders skip it) with every run id of the sweep, which the per-run sweep
  progress line ([sweep] done/failed/remaining) counts against.
* dry_run: `hydra.sweeper.dry_run=true` prints the jobs and their count and launches nothing.

`peftbench sweep-size NAME [OVERRIDES]` counts the runs of a preset without running it.

Rooms: `sweeper` (the Hydra plugin), `arms` (job expansion and run ids), `locks` (the results-folder
lock), `cleanup` (temp files of killed writes), `progress` (the progress line), `size` (counting a
preset's runs), `methods` (presets that list every method the others leave out); core counting is `experiments.cores`, shared with the run.
"""
from __future__ import annotations

from peftbench.experiments.cores import check_parallelism, is_local_submitit, job_cpus, parallel_jobs, usable_cores
from peftbench.experiments.sweep.arms import expand_jobs, job_run_id, task_container
from peftbench.experiments.sweep.cleanup import STALE_TMP_AGE_S, clean_stale_tmp
from peftbench.experiments.sweep.locks import LOCK_NAME, held_locks, results_lock
from peftbench.experiments.sweep.methods import methods_beyond, register as _register_resolver
from peftbench.experiments.sweep.progress import MANIFEST_ENV, progress_line, sweep_counts
from peftbench.experiments.sweep.size import CONF_DIR, main, preset_jobs
from peftbench.experiments.sweep.sweeper import PeftbenchSweeper

_register_resolver()  # before Hydra composes any preset that lists methods by what others leave out

__all__ = [
    "CONF_DIR", "LOCK_NAME", "MANIFEST_ENV", "STALE_TMP_AGE_S", "PeftbenchSweeper", "check_parallelism",
    "clean_stale_tmp", "expand_jobs", "held_locks", "is_local_submitit", "job_cpus", "job_run_id", "main", "methods_beyond",
    "parallel_jobs",
    "preset_jobs", "progress_line", "results_lock", "sweep_counts", "task_container", "usable_cores",
]
