"""The Hydra entry behind `peftbench run`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments import provenance, record
from experiments.run import base_record, execute, prepare, resolve_device
from methods.base import ConfigError


def _record_invalid(config: dict[str, Any], error: ConfigError) -> None:
    """Inside a sweep a bad combination is recorded as failed, and the sweep goes on."""
    rid = record.run_id(config)
    rec = base_record(config, rid)
    rec.update({"status": "failed", "error": f"ConfigError: {error}", "provenance": provenance.collect(resolve_device("cpu"))})
    path = record.result_path(config["results_dir"], rid)
    record.write_atomic(path, rec)
    print(f"FAILED (ConfigError: {error}): {path}", flush=True)


CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        plan = prepare(config)
    except ConfigError as e:
        if multirun:
            _record_invalid(config, e)
            return
        print(f"peftbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    execute(plan)
