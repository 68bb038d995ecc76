"""Jobs of a sweep: Hydra's grid crossed with a union of arms, and the run id each job will get."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict


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



def task_container(cfg: DictConfig) -> dict[str, Any]:
    """The config a job's task function sees (hydra node removed), resolved."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def job_run_id(config: Mapping[str, Any]) -> str:
    from peftbench.experiments import record

    return record.run_id(config)


def already_done(config: Mapping[str, Any], rid: str, skip_done: bool) -> tuple[bool, str | None, str]:
    """(done, problem, path) of a job's result: done when skipping is on, the job is not forced
    and an ok record sits at its path; problem names what makes an existing file unusable. The
    sweeper's plan and `reproduce`'s estimate of the runs left share this one test."""
    from peftbench.experiments import record

    path = record.result_path(config["results_dir"], rid)
    status, problem = record.existing(path)
    return bool(skip_done and not config.get("force") and status == "ok"), problem, str(path)
