"""Per-method learning-rate search: a fair-tuning protocol on top of the ordinary run.

    peftbench run +lr_search=default method=lora                 # grid = method lr x {0.3, 1, 3}
    peftbench run +lr_search=default 'lr_search.grid=[1e-4,3e-4,1e-3]'
    peftbench run -m +sweep=methods +lr_search=default           # every method tuned alike

Protocol (recorded in the result as `lr_search`):
  1. every lr of the grid is an ordinary run (prepare + execute, i.e. run.run_plan) with that
     lr, same seed, same steps; these trial records go to <results_dir>/.lr_trials/ (a hidden
     folder, so tables of final numbers never mix trials in) and are resumable like any run;
  2. the lr with the best `metric` on the `split` split (validation; never test) is chosen;
     ties go to the smaller lr;
  3. the final numbers are the chosen trial's own: its test metrics, cost and loss curve are
     copied into the final record (`final: reuse_trial`). Retraining at the chosen lr with the
     same seed would compute the same run again, so reusing it costs nothing and changes
     nothing; test metrics of the trials that were not chosen are never looked at.
The search runs per seed: with `seed=0,1,2` each seed picks its own lr.

The final record has `protocol: lr_search`, the grid, every trial's lr, run id, status and
validation score, the chosen lr, and the summed cost of the search (`search_total_s`).
protocol_of(record) tells the report which protocol produced any record:
"lr_search", "fixed_lr" (an explicit `lr=` shared by all methods) or "method_default_lr".
"""
from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from peftbench.experiments import metric_spec, record
from peftbench.experiments.record import protocol_of  # noqa: F401  (part of this module's interface)
from peftbench.methods.base import ConfigError

DEFAULT_FACTORS = (0.3, 1.0, 3.0)
TRIALS_DIR = ".lr_trials"

Runner = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def resolve_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """lr_search settings with defaults filled in; ConfigError when they cannot work."""
    spec = dict(config.get("lr_search") or {})
    if config.get("lr") is not None:
        raise ConfigError(f"lr={config['lr']} fixes the learning rate; it cannot be combined with lr_search (drop one)")
    base = config["method"].get("lr")
    grid = spec.get("grid")
    if grid is None:
        if base is None:
            raise ConfigError("lr_search.grid is not set and the method has no default lr to scale")
        factors = spec.get("factors") or DEFAULT_FACTORS
        grid = [float(f"{float(base) * float(f):.3g}") for f in factors]
    grid = sorted({float(x) for x in grid})
    if not grid or any(x <= 0 for x in grid):
        raise ConfigError(f"lr_search.grid must be positive learning rates, got {grid}")
    declared = metric_spec.of_task(config["task"])
    metric = spec.get("metric") or metric_spec.primary(declared)["name"]
    direction = metric_spec.direction(declared, metric)
    split = spec.get("split") or "validation"
    if split == "test":
        raise ConfigError("lr_search.split=test would select on the test set; use validation")
    if split == "validation" and not _may_have_validation(config["task"]):
        raise ConfigError("lr_search selects on the validation split, but this task has none "
                          "(task.n_validation=0, or no validation file and validation_split_percentage=0); give it one")
    return {"grid": grid, "split": split, "metric": metric,
            "mode": spec.get("mode") or direction, "final": "reuse_trial"}


def _may_have_validation(task: Mapping[str, Any]) -> bool:
    """False only where the task config itself rules a validation split out; known before any
    trial trains."""
    if "n_validation" in task:
        return bool(task["n_validation"])
    # GLUE's own validation file is this suite's test split (its test labels are hidden)
    files = {} if task.get("builder") == "glue" else (task.get("data_files") or {})
    given = task.get("validation_file") or files.get("validation")
    carved = task.get("validation_split_percentage")
    return bool(given) or carved is None or float(carved) > 0


def trial_config(config: Mapping[str, Any], lr: float) -> dict[str, Any]:
    c = copy.deepcopy(dict(config))
    c.pop("lr_search", None)
    c["lr"] = lr
    c["results_dir"] = str(Path(config["results_dir"]) / TRIALS_DIR)
    return c


def _score(rec: Mapping[str, Any] | None, split: str, metric: str) -> float | None:
    if not rec or rec.get("status") != "ok":
        return None
    value = (rec.get("metrics") or {}).get(split, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def choose(trials: list[dict[str, Any]], mode: str = "max") -> dict[str, Any] | None:
    scored = [t for t in trials if t["score"] is not None]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda t: (sign * t["score"], -t["lr"]))


def search(config: dict[str, Any], run_one: Runner) -> dict[str, Any]:
    """Run the grid through `run_one(config) -> record`, choose on validation, write the final
    record. Skips everything when an ok final record exists (unless force)."""
    from peftbench.experiments.run import base_record

    rid = record.run_id(config)
    path = record.result_path(config["results_dir"], rid)
    if not config.get("force") and record.is_done(path):
        print(f"skip {rid}: lr-search result exists ({path}); force=true to re-run", flush=True)
        return record.read(path)
    spec = resolve_spec(config)
    started = datetime.now(timezone.utc).isoformat()
    t0 = time.perf_counter()
    trials = []
    records: dict[str, dict[str, Any]] = {}
    for lr in spec["grid"]:
        tc = trial_config(config, lr)
        trec = run_one(tc) or {}
        t_rid = trec.get("run_id") or record.run_id(tc)
        records[t_rid] = trec
        trials.append({"lr": lr, "run_id": t_rid, "status": trec.get("status", "failed"),
                       "score": _score(trec, spec["split"], spec["metric"]),
                       spec["split"]: (trec.get("metrics") or {}).get(spec["split"]),
                       "total_s": (trec.get("timing") or {}).get("total_s")})
        print(f"[lr_search {config['method']['name']}] lr={lr:g}: {spec['split']} {spec['metric']} = {trials[-1]['score']}", flush=True)
    best = choose(trials, spec["mode"])
    rec = base_record(config, rid)
    rec["protocol"] = "lr_search"
    rec["lr_search"] = {"protocol": "lr_search", **spec, "trials_dir": str(Path(config["results_dir"]) / TRIALS_DIR),
                        "trials": trials,  # the chosen lr is the record's own `lr`, as for any run
                        "chosen_run_id": best["run_id"] if best else None,
                        "search_total_s": sum(t["total_s"] or 0.0 for t in trials),
                        "search_wall_s": time.perf_counter() - t0}
    if best is None:
        rec.update({"status": "failed", "error": f"lr_search: no trial produced a {spec['split']} {spec['metric']}",
                    "provenance": next((r.get("provenance") for r in records.values() if r.get("provenance")), {})})
    else:
        chosen = records[best["run_id"]]
        rec.update({k: chosen[k] for k in ("status", "error", "params", "metrics", "metric_spec", "metrics_before", "metrics_majority", "eval_items", "items", "forgetting", "lm_eval", "lm_eval_before",
                                                  "loss_curve", "lr", "timing", "cost", "measurement",
                                                  "method_info", "provenance") if k in chosen})
    rec["started_at"], rec["finished_at"] = started, datetime.now(timezone.utc).isoformat()
    record.write_atomic(path, rec)
    status = "ok" if rec["status"] == "ok" else f"FAILED ({rec['error']})"
    print(f"{status}: {path} (lr_search chose lr={rec.get('lr')})", flush=True)
    return rec
