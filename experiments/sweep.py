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

`python -m experiments.sweep NAME [OVERRIDES]` counts the runs of a preset without running it.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MANIFEST_ENV = "PEFTBENCH_SWEEP_MANIFEST"
LOCK_NAME = ".peftbench.lock"
STALE_TMP_AGE_S = 3600.0


# -- job expansion --------------------------------------------------------------------------------

def _key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def _grid(items: Sequence[str], parser: OverridesParser) -> list[list[str]]:
    if not items:
        return [[]]
    return BasicSweeper.split_arguments(parser.parse_overrides(list(items)), None)[0]


def _as_items(mapping: Mapping[str, Any] | None) -> list[str]:
    return [f"{k}={v}" for k, v in (mapping or {}).items()]


def expand_jobs(params: Mapping[str, Any] | None, arms: Sequence[Mapping[str, Any]] | None,
                arguments: Sequence[str], parser: OverridesParser | None = None) -> list[list[str]]:
    """(union over arms of each arm's grid) x grid(params + command line).

    The command line replaces a key of params, as in Hydra. A key of params or of the command line
    that an arm also sets filters that arm instead of being crossed with it:
    `+sweep=ranks method=lora` keeps the 6 lora runs of the ranks preset."""
    parser = parser or OverridesParser.create()
    dedup: dict[str, str] = {}
    for item in _as_items(params) + list(arguments):  # later items win, as in BasicSweeper
        dedup[_key(item)] = item
    inner = _grid(list(dedup.values()), parser)
    if not arms:
        return inner
    jobs: list[list[str]] = []
    for arm in arms:
        for a in _grid(_as_items(arm), parser):
            arm_items = {_key(x): x.lstrip("+~") for x in a}
            for b in inner:
                given = {_key(x): x.lstrip("+~") for x in b}
                if any(k in given and given[k] != v for k, v in arm_items.items()):
                    continue
                jobs.append([x for x in a if _key(x) not in given] + b)
    return jobs


# -- run ids without running ------------------------------------------------------------------------

def task_container(cfg: DictConfig) -> dict[str, Any]:
    """The config a job's task function sees (hydra node removed), resolved."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def job_run_id(config: Mapping[str, Any]) -> str:
    from experiments import record

    return record.run_id(config)


# -- stale temp files -------------------------------------------------------------------------------

@contextmanager
def results_lock(results_dir: str | Path) -> Iterator[bool]:
    """Hold a shared lock on the results dir while runs may write there; yields whether this
    process found no other holder (then every temp file in the dir is from a dead writer)."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except OSError:
            alone = False
        if alone:
            clean_stale_tmp(d, alone=True)
        fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade (or wait for a cleaner to finish)
        if not alone:
            clean_stale_tmp(d, alone=False)
        yield alone
    finally:
        os.close(fd)  # releases the lock


def clean_stale_tmp(results_dir: str | Path, alone: bool, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Remove `.NAME.*.tmp` files that record.write_atomic left behind when it was killed.

    Safe against live writers: every peftbench process holds a shared lock on the results dir
    while it runs (results_lock). With `alone` (we got the lock exclusively) no writer is alive,
    so every temp file is stale. Otherwise only temp files older than max_age_s go: a record is
    written in milliseconds, so a live writer never has a temp file that old."""
    removed = []
    now = time.time()
    for tmp in Path(results_dir).rglob(".*.json.*.tmp"):
        try:
            if alone or now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            pass
    if removed:
        print(f"[sweep] removed {len(removed)} stale temp file(s) from killed writes in {results_dir}", flush=True)
    return removed


# -- cores ----------------------------------------------------------------------------------------

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


# -- the sweeper -----------------------------------------------------------------------------------

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
        for overrides in jobs:
            cfg = loader.load_sweep_config(self.config, list(overrides))
            try:
                config = task_container(cfg)
                rid = job_run_id(config)
            except Exception as e:  # noqa: BLE001 - a job we cannot name is launched and fails there
                entries.append({"overrides": list(overrides), "run_id": None, "results_dir": None, "done": False, "why": str(e)})
                continue
            if rid in seen:
                continue
            seen[rid] = len(entries)
            from experiments import record

            path = record.result_path(config["results_dir"], rid)
            status, problem = record.existing(path)
            if problem:
                print(f"[sweep] {path} is {problem}: its run runs again", flush=True)
            done = bool(self.skip_done and not config.get("force") and status == "ok")
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
        from experiments import record
        from methods.base import ConfigError

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
        with _locks(dirs):
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


@contextmanager
def _locks(dirs: Sequence[str]) -> Iterator[None]:
    if not dirs:
        yield
        return
    with results_lock(dirs[0]):
        with _locks(dirs[1:]):
            yield


# -- sweep-level progress -------------------------------------------------------------------------

def sweep_counts(manifest: Path) -> dict[str, Any]:
    """Counts of this sweep's runs from their result files: ok (done, now or before), failed (in
    this sweep invocation), remaining (not yet written, or a failure from an earlier attempt)."""
    from experiments import record

    m = json.loads(Path(manifest).read_text())
    started = float(m["started_at"])
    ok = failed = 0
    for e in m["runs"]:
        if not e.get("run_id"):
            continue
        path = record.result_path(e["results_dir"], e["run_id"])
        try:
            status = record.read(path).get("status")
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if status == "ok":
            ok += 1
        elif status in ("failed", "diverged") and mtime >= started - 1:
            failed += 1
    total = int(m["total"])
    return {"total": total, "done": ok, "failed": failed, "remaining": max(0, total - ok - failed),
            "already_done": int(m.get("already_done", 0)), "elapsed_s": time.time() - started}


def progress_line(manifest: str | Path | None) -> str | None:
    if not manifest or not Path(manifest).exists():
        return None
    c = sweep_counts(Path(manifest))
    finished_now = c["done"] + c["failed"] - c["already_done"]
    eta = ""
    if finished_now > 0 and c["remaining"]:
        eta = f", ETA ~{_fmt_s(c['elapsed_s'] / finished_now * c['remaining'])}"
    return (f"[sweep] {c['done'] + c['failed']}/{c['total']} finished: {c['done']} done, {c['failed']} failed, "
            f"{c['remaining']} remaining ({_fmt_s(c['elapsed_s'])} elapsed{eta})")


def _fmt_s(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


# -- counting without running ----------------------------------------------------------------------

def preset_jobs(preset: str | Sequence[str], overrides: Sequence[str] = (), unique: bool = False) -> list[list[str]]:
    """The jobs `peftbench run -m +sweep=PRESET OVERRIDES` launches on an empty results dir.

    With unique=True, jobs that compose to the same run id are merged, as the sweeper does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    names = [preset] if isinstance(preset, str) else list(preset)
    sweep_ov = f"+sweep={names[0]}" if len(names) == 1 else f"+sweep=[{','.join(names)}]"
    parser = OverridesParser.create()
    args = list(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[sweep_ov], return_hydra_config=True)
        sweeper = cfg.hydra.sweeper
        params = _plain(sweeper.get("params")) or {}
        arms = _plain(sweeper.get("arms")) or []
        jobs = expand_jobs(params, arms, args, parser)  # type: ignore[arg-type]
        if not unique:
            return jobs
        seen, out = set(), []
        for job in jobs:
            rid = job_run_id(task_container(compose("config", overrides=[sweep_ov, *job], return_hydra_config=True)))
            if rid not in seen:
                seen.add(rid)
                out.append(job)
        return out


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print("usage: python -m experiments.sweep PRESET[,PRESET...] [OVERRIDES...] [--list] [--unique]")
        return 2
    names = argv[0].split(",")
    rest = [a for a in argv[1:] if not a.startswith("--")]
    jobs = preset_jobs(names, rest, unique="--unique" in argv)
    if "--list" in argv:
        for j in jobs:
            print(" ".join(j))
    print(f"{'+'.join(names)}: {len(jobs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
