"""lm-eval harness on the adapted causal LM, after training.

Config (conf/config.yaml):
    lm_eval: {tasks: [], include_path: null, limit: null, num_fewshot: 0, batch_size: 8}
`tasks` are lm-eval task (or group) names; the project's own tasks in conf/lm_eval_tasks are
always on the include path, and `include_path` (a folder or a list of folders of task YAMLs)
adds the user's. `limit` caps examples per task (an int, or a fraction < 1), for smoke runs
only: results with a limit are not comparable to published numbers.

The model is evaluated as it is after training (adapters unmerged), through
lm_eval.models.huggingface.HFLM on the run's device, with bf16 autocast when precision=bf16,
exactly as the run's own evaluation. lm-eval's own fixed seeds are kept (not the run's seed), so
every method and training seed is scored on the same few-shot examples. `evaluate_adapter` does the same for a saved peft adapter
folder loaded onto its base model.
"""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from peftbench.methods.base import ConfigError, positive_int
from peftbench.experiments.paths import CONF

PROJECT_TASKS = CONF / "lm_eval_tasks"


def _settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    le = dict(cfg.get("lm_eval") or {})
    tasks = le.get("tasks") or []
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    le["tasks"] = [str(t) for t in tasks]
    return le


def include_paths(le: Mapping[str, Any]) -> list[str]:
    extra = le.get("include_path") or []
    if isinstance(extra, (str, Path)):
        extra = [extra]
    paths = [str(PROJECT_TASKS)]
    for p in extra:
        path = Path(str(p)).expanduser()
        if not path.exists():
            raise ConfigError(f"lm_eval.include_path: {path} does not exist")
        paths.append(str(path.resolve()))
    return paths


@lru_cache(maxsize=8)
def _manager(paths: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=defaults)


def _task_manager(le: Mapping[str, Any]):
    """The local task folders alone when they define every requested task (indexing lm-eval's
    thousands of built-in task YAMLs takes seconds), else those plus the built-ins."""
    paths = tuple(include_paths(le))
    local = _manager(paths, False)
    if all(t in set(local.all_tasks) for t in le["tasks"]):
        return local
    return _manager(paths, True)


def validate_lm_eval(config: Mapping[str, Any]) -> None:
    """Before any model is loaded: a causal LM, known task names, sane knobs."""
    le = _settings(config)
    if not le["tasks"]:
        return
    model = config.get("model") or {}
    task = config.get("task") or {}
    if model.get("kind") != "causal_lm" or task.get("kind", "classification") != "generation":
        raise ConfigError(
            "lm_eval.tasks needs a causal LM with its LM head: use a causal_lm model with a generation task "
            f"(e.g. task=gsm8k or task=instructions); got model {model.get('name')} ({model.get('kind')}) "
            f"with task {task.get('name')} ({task.get('kind', 'classification')})"
        )
    for key in ("batch_size",):
        v = le.get(key, 8)
        if not positive_int(v):
            raise ConfigError(f"lm_eval.{key} must be a positive integer, got {v!r}")
    shots = le.get("num_fewshot")
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 0):
        raise ConfigError(f"lm_eval.num_fewshot must be null or an integer >= 0, got {shots!r}")
    limit = le.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise ConfigError(f"lm_eval.limit must be null, a positive count or a fraction in (0, 1), got {limit!r}")
    tm = _task_manager(le)
    known = set(tm.all_tasks)
    unknown = [t for t in le["tasks"] if t not in known]
    if unknown:
        raise ConfigError(f"unknown lm-eval task(s) {unknown}; add their YAML folder with lm_eval.include_path=DIR "
                          "(`lm-eval ls tasks` lists the built-in ones)")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def run_lm_eval(model: torch.nn.Module, tokenizer, cfg: Mapping[str, Any], device: torch.device | str) -> dict | None:
    """Evaluate `model` on cfg["lm_eval"]["tasks"]; None when there are none.

    Returns {"results": {task: {metric: value}}, "n_samples", "versions", "n_shot", "settings",
    "eval_s"} ready for the run's JSON record.
    """
    le = _settings(cfg)
    if not le["tasks"]:
        return None
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    precision = cfg.get("precision")
    mixed = torch.bfloat16 if precision == "bf16" else None
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device=str(device), batch_size=int(le.get("batch_size") or 8),
              mixed_precision_dtype=mixed, max_length=le.get("max_length"))
    limit = le.get("limit")
    out = simple_evaluate(
        model=lm,
        tasks=le["tasks"],
        task_manager=_task_manager(le),
        num_fewshot=le.get("num_fewshot"),
        limit=limit,
        device=str(device),
        log_samples=False,
        **({"bootstrap_iters": int(le["bootstrap_iters"])} if le.get("bootstrap_iters") is not None else {}),
    )
    model.train(was_training)
    return _jsonable({
        "results": out.get("results", {}),
        "groups": out.get("groups", {}),
        "n_samples": out.get("n-samples", {}),
        "versions": out.get("versions", {}),
        "n_shot": out.get("n-shot", {}),
        "settings": {"tasks": le["tasks"], "include_path": include_paths(le)[1:], "limit": limit,
                     "num_fewshot": le.get("num_fewshot"), "batch_size": int(le.get("batch_size") or 8),
                     "mixed_precision": str(mixed) if mixed else None},
        "eval_s": time.perf_counter() - t0,
    })


def load_adapter(model_cfg: Mapping[str, Any], adapter_dir: str | Path, device: torch.device | str):
    """A saved peft adapter folder (method.save of LoRA-family methods) on its base causal LM."""
    from peft import PeftModel

    from peftbench.experiments.models import load_model, load_tokenizer

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ConfigError(f"{adapter_dir} has no adapter_config.json; pass a folder written by a peft method's save()")
    device = torch.device(device)
    tokenizer = load_tokenizer(model_cfg)
    base = load_model(model_cfg, "generation", None, device, {}, tokenizer.pad_token_id)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).to(device)
    model.eval()
    return model, tokenizer


def evaluate_adapter(model_cfg: Mapping[str, Any], adapter_dir: str | Path, cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> dict | None:
    """lm-eval on a saved adapter: `cfg` holds the lm_eval block (and optionally precision, seed)."""
    model, tokenizer = load_adapter(model_cfg, adapter_dir, device)
    return run_lm_eval(model, tokenizer, cfg, device)
