"""Measure once what does not change with the seed or the learning rate.

Two caches, both keyed by what the figures depend on and by the machine that took them
(experiments.meters.cache.machine_key), both written atomically:

* Costs (`<results_dir>/.costs/<key>.json`): latency (unmerged and merged), the serving figures,
  adapter size and the merge variants' test scores of one cost configuration, which is the run's config less its
  seed and learning rate. The first run of a configuration measures them, and every later run that
  shares it copies them, its record naming the run they came from (`measurement.costs_from`).
  A measurement taken while other work competed for the cores is never stored, so the next run
  measures again. They live beside the records because they are figures of those runs.
* Base measurements (`~/.cache/peftbench/base/<key>.pt`): the base model's task scores, its lm-eval
  scores and the forgetting probe's before-pass, per model, task, evaluation set, precision and load
  path (QLoRA loads another base). A classifier's fresh head is drawn from the run's seed, so for
  classifiers the seed is part of the key; a causal LM's base is the same for every seed. These are
  forward passes without randomness: the cached figures are the ones a fresh pass gives.

`reuse_measurements=false` measures everything in every run.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from peftbench.experiments import record
from peftbench.experiments.fields import serving_depends_on_weights
from peftbench.experiments.meters.cache import cache_dir, machine_key

COSTS_DIR = ".costs"
# figures a run copies besides all of `cost.latency_*`; the merge variants' logit differences are
# measured by every run on its own weights (experiments.fields.serving_depends_on_weights)
COPIED_COST_KEYS = ("can_merge", "adapter_bytes")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def enabled(config: Mapping[str, Any]) -> bool:
    return bool(config.get("reuse_measurements", True))


def reading(config: Mapping[str, Any]) -> bool:
    """Whether a run may read the caches: reuse is on and the run is not forced (`force=true`
    measures everything anew, and its figures then replace the cached ones)."""
    return enabled(config) and not config.get("force")


ROOT = Path(__file__).resolve().parents[1]
# the code that computes the cached figures: an edit to any of it is another key
MEASURING_CODE = ("experiments/data", "experiments/meters", "experiments/forgetting.py", "experiments/lm_eval_hook.py",
                  "experiments/models", "methods")
VERSIONED = ("torch", "transformers", "peft", "bitsandbytes", "lm-eval", "datasets", "numpy")


@lru_cache(maxsize=1)
def code_stamp() -> dict[str, Any]:
    """Package versions and a hash of the suite's measuring code, part of every cache key."""
    from importlib import metadata

    digest = hashlib.sha256()
    for rel in MEASURING_CODE:
        path = ROOT / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if f.exists():
                digest.update(str(f.relative_to(ROOT)).encode() + f.read_bytes())
    versions = {}
    for pkg in VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"code": digest.hexdigest()[:16], "versions": versions}


# -- costs ----------------------------------------------------------------------------------------

def cost_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config less what a cost figure does not depend on: seed and learning rate (shared or
    the method's own), and the lr search around them."""
    out = record.semantic_config(config)
    for k in ("seed", "lr", "lr_search"):
        out.pop(k, None)
    out["method"] = {k: v for k, v in dict(out.get("method") or {}).items() if k != "lr"}
    return out


def cost_key(config: Mapping[str, Any], device: torch.device, threads: int) -> str:
    return _digest({"config": cost_config(config), "machine": machine_key(device, threads), "code": code_stamp()})


def _cost_path(config: Mapping[str, Any], key: str) -> Path:
    return Path(str(config["results_dir"])) / COSTS_DIR / f"{key}.json"


def is_copied_cost(key: str) -> bool:
    return key.startswith("latency_") or key in COPIED_COST_KEYS


def lookup_costs(config: Mapping[str, Any], device: torch.device, threads: int) -> dict[str, Any] | None:
    """The stored cost figures of this cost configuration on this machine, or None."""
    if not reading(config):
        return None
    path = _cost_path(config, cost_key(config, device, threads))
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("source_run_id") else None


def store_costs(config: Mapping[str, Any], device: torch.device, threads: int, run_id: str,
                cost: Mapping[str, Any], serving: Any) -> Path | None:
    if not enabled(config):
        return None
    path = _cost_path(config, cost_key(config, device, threads))
    if isinstance(serving, Mapping):  # the seconds each part took were the source run's, not a copier's
        serving = {k: v for k, v in serving.items() if k != "measure_s" and not serving_depends_on_weights(k)}
    entry = {"source_run_id": run_id, "cost": {k: v for k, v in cost.items() if is_copied_cost(k)}, "serving": serving}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(entry, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- base measurements ----------------------------------------------------------------------------

def _files_stamp(task_cfg: Mapping[str, Any], config: Mapping[str, Any]) -> list:
    """Size and mtime of every data file the figures read: an edited file is another key."""
    files = list(dict(task_cfg.get("data_files") or {}).values())
    files.append((config.get("forgetting") or {}).get("data_files"))
    out = []
    for f in files:
        if isinstance(f, str) and f:
            try:
                st = Path(f).expanduser().stat()
                out.append([f, st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([f, None, None])
    return out


def base_key(config: Mapping[str, Any], load_path: str, fresh_head: bool, device: torch.device, threads: int) -> str:
    parts = {
        "model": config["model"], "task": config["task"], "precision": config["precision"],
        "max_length": config["max_length"], "eval_batch_size": config["eval_batch_size"],
        "metrics_before": (config.get("measure") or {}).get("metrics_before", True),
        "forgetting": config.get("forgetting"), "lm_eval": config.get("lm_eval"),
        "load": load_path, "seed": config["seed"] if fresh_head else None,
        "files": _files_stamp(config["task"], config), "machine": machine_key(device, threads), "code": code_stamp(),
    }
    return _digest(parts)


def _base_path(key: str) -> Path:
    return cache_dir() / "base" / f"{key}.pt"


def lookup_base(config: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    if not reading(config):
        return None
    path = _base_path(key)
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a torn or foreign file: measure again, and overwrite it below
        return None


def store_base(config: Mapping[str, Any], key: str, entry: Mapping[str, Any]) -> None:
    if not enabled(config):
        return
    path = _base_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(dict(entry), tmp)
    os.replace(tmp, path)
