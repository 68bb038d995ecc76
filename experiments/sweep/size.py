"""Counting a preset's runs without running it: `peftbench sweep-size NAME [OVERRIDES]`."""
from __future__ import annotations

import sys
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from peftbench.experiments.sweep.arms import expand_jobs, job_run_id, task_container

from peftbench.experiments.paths import CONF as CONF_DIR


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
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


USAGE = """usage: peftbench sweep-size PRESET[,PRESET...] [OVERRIDES...] [--list] [--unique]

How many runs `peftbench run -m +sweep=PRESET OVERRIDES` makes, without running any.

options:
  PRESET     a sweep preset of conf/sweep/ (several, comma-separated, are crossed)
  OVERRIDES  key=value, as for `peftbench run`
  --list     print each job's overrides
  --unique   merge jobs that compose to the same run id, as the sweeper does"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print(USAGE)
        return 0 if set(argv) & {"-h", "--help"} else 2
    names = argv[0].split(",")
    rest = [a for a in argv[1:] if not a.startswith("--")]
    jobs = preset_jobs(names, rest, unique="--unique" in argv)
    if "--list" in argv:
        for j in jobs:
            print(" ".join(j))
    print(f"{'+'.join(names)}: {len(jobs)} runs")
    return 0
