"""The Hydra sweeper: plans the jobs, skips the done ones, writes the manifest, launches the rest."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from peftbench.experiments.cores import check_parallelism, is_local_submitit, parallel_jobs, runs_here, usable_cores
from peftbench.experiments.sweep.arms import already_done, expand_jobs, job_run_id, task_container
from peftbench.experiments.sweep.locks import held_locks
from peftbench.experiments.sweep.progress import MANIFEST_ENV, progress_line


# The sweep names its runs here before they launch, and `auto` resolves on the machine it runs on:
# a login node without the cluster's GPUs would name every run by the wrong precision.
AUTO_REMOTE = ("peftbench: error: precision=auto resolves on the machine that runs it, but this launcher runs "
               "the jobs on other machines; set precision=bf16 (GPUs from compute capability 8.0) or precision=fp32")


class PeftbenchSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 arms: list[dict[str, Any]] | None = None, skip_done: bool = True, dry_run: bool = False) -> None:
        # not super().__init__: Hydra's plugin scan re-executes basic_sweeper.py, after which
        # BasicSweeper.__init__'s `super(BasicSweeper, self)` no longer matches this class's base
        self.overrides = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context = None
        self.config = None
        self.launcher = None
        self.arms = [dict(a) for a in (arms or [])]
        self.skip_done = skip_done
        self.dry_run = dry_run

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        pass  # every job was composed in plan_jobs() already

    def plan_jobs(self, arguments: list[str]) -> dict[str, Any]:
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        jobs = expand_jobs(self.params, self.arms, arguments, parser)
        seen: dict[str, int] = {}
        entries = []
        remote = not runs_here(self.config.hydra.get("launcher"))
        for overrides in jobs:
            cfg = loader.load_sweep_config(self.config, list(overrides))
            try:
                config = task_container(cfg)
                if remote and config.get("precision") == "auto":
                    print(AUTO_REMOTE, file=sys.stderr, flush=True)
                    raise SystemExit(2)
                rid = job_run_id(config)
            except Exception as e:  # noqa: BLE001 - a job we cannot name is launched and fails there
                entries.append({"overrides": list(overrides), "run_id": None, "results_dir": None, "done": False, "why": str(e)})
                continue
            if rid in seen:
                continue
            seen[rid] = len(entries)
            done, problem, path = already_done(config, rid, self.skip_done)
            if problem:
                print(f"[sweep] {path} is {problem}: its run runs again", flush=True)
            entries.append({"overrides": list(overrides), "run_id": rid, "results_dir": str(config["results_dir"]), "done": done})
        return {"expanded": len(jobs), "entries": entries}

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        plan = self.plan_jobs(arguments)
        entries = plan["entries"]
        todo = [e for e in entries if not e["done"]]
        launcher = self.config.hydra.get("launcher")
        # submitit_local starts a batch of jobs at once: the sweep, or max_batch_size of it
        n_jobs = parallel_jobs(launcher, min(len(todo), self.max_batch_size or len(todo)))
        merged = plan["expanded"] - len(entries)
        head = (f"[sweep] {len(entries)} runs" + (f" ({merged} duplicate jobs merged)" if merged else "")
                + f", {len(entries) - len(todo)} already done, {len(todo)} to launch"
                + (f", {n_jobs} at a time" if n_jobs > 1 else ""))
        print(head, flush=True)
        if self.dry_run:
            for e in entries:
                print(("done  " if e["done"] else "run   ") + " ".join(e["overrides"]), flush=True)
            return []
        from peftbench.experiments import record
        from peftbench.methods.base import ConfigError

        for d in sorted({e["results_dir"] for e in entries if e["results_dir"]} | {str(self.config.results_dir)}):
            unusable = record.check_results_dir(d)
            if unusable:
                raise ConfigError(unusable)
        problem = check_parallelism(n_jobs, self.config.get("torch_threads"), is_local_submitit(launcher))
        if problem and n_jobs > usable_cores():
            raise ConfigError(problem)
        if problem:
            print(f"[sweep] note: {problem}", flush=True)
        # Threads per job follow from the whole sweep, not from what is left of it: a resumed
        # submitit_local sweep gives its remaining runs the thread count (hence the numerics) of
        # the first start.
        share = max(n_jobs, parallel_jobs(launcher, min(len(entries), self.max_batch_size or len(entries))))
        if share > 1:
            os.environ["PEFTBENCH_PARALLEL_JOBS"] = str(share)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        manifest = sweep_dir / ".sweep.json"
        manifest.write_text(json.dumps({"started_at": time.time(), "n_jobs": n_jobs, "total": len(entries),
                                        "already_done": len(entries) - len(todo), "runs": entries}, indent=1))
        os.environ[MANIFEST_ENV] = str(manifest.resolve())

        dirs = sorted({e["results_dir"] for e in entries if e["results_dir"]}) or [str(self.config.results_dir)]
        returns = []
        with held_locks(dirs):
            overrides = [e["overrides"] for e in todo]
            n = self.max_batch_size or len(overrides) or 1
            idx = 0
            for i in range(0, len(overrides), n):
                batch = overrides[i:i + n]
                results = self.launcher.launch(batch, initial_job_idx=idx)
                for r in results:
                    _ = r.return_value
                idx += len(batch)
                returns.append(results)
        line = progress_line(manifest)
        if line:
            print(line.replace("[sweep]", "[sweep] sweep over:", 1), flush=True)
        return returns
