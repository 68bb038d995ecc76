"""A record as one flat row: the columns every table, figure and claim reads."""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from peftbench.analysis.meta import MetricSpec, capacity_of, method_report, primary_of, sign, task_metrics
from peftbench.experiments.fields import BY_PATH, FIELDS, get_path, serving_depends_on_weights
from peftbench.experiments.record import protocol_of
from peftbench.analysis.load.identity import device_type, non_method, setting_items, short_hash
from peftbench.analysis.load.words import in_words


def _num(value: Any) -> float:
    """A float, or NaN for None / non-numbers, so that pandas aggregates skip it."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def targets_of(method_cfg: Mapping[str, Any]) -> str:
    """Target-module preset name, a list joined with '+', or '-' when the method has none."""
    t = method_cfg.get("target_modules", (method_cfg.get("peft_kwargs") or {}).get("target_modules"))
    if isinstance(t, str) and t:
        return t
    if isinstance(t, (list, tuple)) and t:
        return "+".join(map(str, t))
    return "-"


def lr_of(record: Mapping[str, Any]) -> float:
    cfg = record.get("config", {})
    for value in (record.get("lr"), cfg.get("method", {}).get("lr"), cfg.get("lr")):
        if isinstance(value, (int, float)):
            return float(value)
    return math.nan




def _numbers(prefix: str, values: Any) -> dict[str, float]:
    """{prefix + name: value} for the numeric entries of a mapping."""
    if not isinstance(values, Mapping):
        return {}
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def lm_eval_columns(lm_eval: Any) -> dict[str, float]:
    """lm-eval's scores as `lm_eval.<task>.<metric>` (its standard errors left out: the tables
    show the spread over seeds)."""
    results = lm_eval.get("results") if isinstance(lm_eval, Mapping) else None
    out: dict[str, float] = {}
    for task, scores in (results or {}).items():
        out.update({k: v for k, v in _numbers(f"lm_eval.{task}.", scores).items() if "_stderr" not in k})
    return out


def metric_columns(record: Mapping[str, Any], specs: tuple[MetricSpec, ...]) -> dict[str, Any]:
    """The task's metrics on test and validation, the base model's score before training, and
    the primary one under fixed names (`primary`, `val_primary`, `primary_before`), so that the
    report reads any task the same way."""
    metrics = record.get("metrics") or {}
    before = record.get("metrics_before") or {}
    out: dict[str, Any] = {}
    for split in ("test", "validation"):
        out.update(_numbers(f"metrics.{split}.", metrics.get(split)))
        out.update(_numbers(f"metrics_before.{split}.", before.get(split)))
    p = primary_of(specs)
    name = p.name if p else "-"
    out["primary_metric"] = name
    out["primary_direction"] = p.direction if p else "max"
    out["primary_range"] = p.range if p else None
    out["primary"] = out.get(f"metrics.test.{name}", math.nan)
    out["val_primary"] = out.get(f"metrics.validation.{name}", math.nan)
    out["primary_before"] = out.get(f"metrics_before.test.{name}", math.nan)
    # positive = better than the base model, whichever way the metric points
    out["gain_over_base"] = sign(out["primary_direction"]) * (out["primary"] - out["primary_before"])
    out["task_metrics"] = tuple((s.name, s.direction, s.primary) for s in specs)
    return out


def _floor(record: Mapping[str, Any], name: str, task_cfg: Mapping[str, Any] | None) -> tuple[float, str]:
    """The better of the majority-class predictor (`metrics_majority`; for records that predate it,
    recomputed for generated tasks) and the base model before training on validation, for a metric
    where higher is better, and which of the two it is; (nan, "-") when neither is known."""
    majority = ((record.get("metrics_majority") or {}).get("validation") or {}).get(name)
    if majority is None and task_cfg is not None:
        from peftbench.experiments.data.base import generated_majority  # old records only: it loads torch

        majority = ((generated_majority(task_cfg) or {}).get("validation") or {}).get(name)
    base = ((record.get("metrics_before") or {}).get("validation") or {}).get(name)
    floors = {k: float(v) for k, v in (("the majority class", majority), ("the base model", base)) if isinstance(v, (int, float))}
    if not floors:
        return math.nan, "-"
    source = max(floors, key=floors.get)
    return floors[source], source


def floor_columns(record: Mapping[str, Any], specs: tuple[MetricSpec, ...], task_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a run must beat on validation to count as having learned (analysis.guards): its floor
    (_floor), the number of validation items, and the metric tested with its spread over items.
    The primary metric where it has a per-item test (experiments.metric_spec.SPREADS) and higher
    is better; else the first of the task's other such metrics (macro-F1 primary: accuracy), named
    in `val_tested_metric`, beside the primary's own floor (`val_primary_floor`); none: nothing to
    test."""
    p = primary_of(specs)
    testable = [m for m in specs if m.spread and m.direction == "max"]
    tested = p if p is not None and p in testable else (testable[0] if testable else None)
    n = (record.get("eval_items") or {}).get("validation")
    if n is None and task_cfg is not None and isinstance(task_cfg.get("n_validation"), int):
        n = task_cfg["n_validation"]
    out = {"val_floor": math.nan, "val_floor_source": "-", "val_items": float(n) if n else math.nan,
           "val_tested_metric": "-", "val_tested": math.nan, "val_spread": "-", "val_primary_floor": math.nan}
    if tested is None or p is None or p.direction != "max":
        return out
    floor, source = _floor(record, tested.name, task_cfg)
    if math.isnan(floor):
        return out
    value = ((record.get("metrics") or {}).get("validation") or {}).get(tested.name)
    out.update({"val_floor": floor, "val_floor_source": source, "val_tested_metric": tested.name,
                "val_tested": float(value) if isinstance(value, (int, float)) else math.nan, "val_spread": tested.spread})
    if tested is not p:
        out["val_primary_floor"] = _floor(record, p.name, task_cfg)[0]
    return out


def forgetting_columns(forgetting: Any) -> dict[str, Any]:
    """Every number of the forgetting block as `forgetting.<key>`, and the headline one (the
    block's `primary` key) under `forgetting`, named in `forgetting_key`."""
    if not isinstance(forgetting, Mapping):
        return {"forgetting": math.nan, "forgetting_key": "-"}
    out: dict[str, Any] = _numbers("forgetting.", forgetting)
    key = str(forgetting.get("primary") or "-")
    out["forgetting_key"] = key
    out["forgetting"] = out.get(f"forgetting.{key}", math.nan)
    return out


def flatten(record: Mapping[str, Any], file: str = "") -> dict[str, Any]:
    """One table row from one record. Measured fields keep their record path as column name
    (experiments.fields); task metrics, lm-eval scores and forgetting keep theirs too."""
    cfg = record.get("config", {})
    mcfg = cfg.get("method", {}) or {}
    rep = method_report(str(record["method"]), mcfg)
    capacity, capacity_value = capacity_of(mcfg, rep["capacity_key"])
    task_cfg = cfg.get("task") if isinstance(cfg.get("task"), Mapping) else None
    specs = task_metrics(record)
    prov = record.get("provenance", {}) or {}
    items = setting_items(record)
    protocol = protocol_of(record)
    can_merge = get_path(record, "method_info.can_merge")
    return {
        "file": file,
        "run_id": record["run_id"],
        "status": str(record.get("status", "ok")),
        "method": record["method"],
        "model": record["model"],
        "task": record["task"],
        "seed": int(record["seed"]),
        "precision": record["precision"],
        # Under lr_search each seed chooses its own lr: the row is "lr searched", and the chosen lr
        # is a per-run value, or seeds that chose differently would split into rows of n=1.
        "lr": math.nan if protocol == "lr_search" else lr_of(record),
        "chosen_lr": lr_of(record),
        "protocol": protocol,
        "steps": int(cfg["steps"]) if isinstance(cfg.get("steps"), int) else -1,
        "capacity": capacity,
        "capacity_value": capacity_value,
        "targets": targets_of(mcfg),
        "setting": short_hash(items),
        "ref_setting": short_hash(non_method(items)),
        "setting_items": items,
        "device": device_type(prov),
        **rep,
        **metric_columns(record, specs),
        # per-item test outcomes (experiments/outcomes.py), for the paired bootstrap; None in older records
        "items.test": (record.get("items") or {}).get("test"),
        **floor_columns(record, specs, task_cfg),
        **lm_eval_columns(record.get("lm_eval")),
        **forgetting_columns(record.get("forgetting")),
        **{f.path: _num(get_path(record, f.path)) for f in FIELDS},
        "measurement.memory_kind": str(get_path(record, "measurement.memory_kind") or "-"),
        **measurement_columns(record),
        "serving_skipped": serving_skipped(record),
        # None for records from before can_merge existed: unknown, not 'cannot merge'
        "method_info.can_merge": can_merge if isinstance(can_merge, bool) else None,
        "loss_curve": [float(x) for x in record.get("loss_curve", []) if isinstance(x, (int, float))],
        # objective=grpo: each step's mean reward and its spread over the step's completions
        "reward_curve": [float(x) for x in (record.get("objective") or {}).get("reward_mean", []) if isinstance(x, (int, float))],
        "reward_std_curve": [float(x) for x in (record.get("objective") or {}).get("reward_std", []) if isinstance(x, (int, float))],
        "finished_at": str(record.get("finished_at") or ""),
        **provenance_columns(prov),
    }


# Figures that do not depend on seed or lr: a run may copy them from an earlier run of the same
# cost configuration (`measurement.costs_from`) instead of measuring them again.
COPIED_PREFIXES = ("cost.latency_", "serving.")
COPIED_FIELDS = ("cost.adapter_bytes",)
# Units of figures that are wall-clock timings; fractions named here are ratios of timings.
TIMING_UNITS = ("ms", "s", "tokens/s", "samples/s", "flop/s")
TIMING_FRACS = ("cost.mfu_frac",)


def is_copied(column: str) -> bool:
    """Whether a run may carry this figure copied from another run (see measurement_source).
    Merge precision depends on the trained weights: every run measures it itself."""
    if column.startswith("serving.") and serving_depends_on_weights(column.split(".", 1)[1].split(".")[-1]):
        return False
    return column.startswith(COPIED_PREFIXES) or column in COPIED_FIELDS


def is_timing(column: str) -> bool:
    """Whether a figure is a timing or derived from timings (throughput, step time, latency and its
    overheads and noise, MFU): what other work on the cores distorts."""
    f = BY_PATH.get(column)
    if f is None:
        return False
    return f.unit in TIMING_UNITS or column in TIMING_FRACS or (f.unit == "frac" and ("overhead" in column or "noise" in column))


def measurement_source(row: Mapping[str, Any]) -> str:
    """The run that measured this row's copied figures (is_copied): `measurement.costs_from`, or
    the row's own run id when it measured them itself. Rows with one source are one observation."""
    source = row.get("measurement.costs_from")
    return source if isinstance(source, str) and source else str(row["run_id"])


def timings_contended(row: Mapping[str, Any], copied: bool) -> bool:
    """Whether other work competed for the cores while this row's own timings (copied=False) or
    its copied ones (copied=True: the flag of the run that measured them) were taken."""
    flag = row.get("costs_contended" if copied else "measurement.contended")
    return bool(pd.notna(flag) and flag)  # NaN: a frame from before the flag existed


def contended_for(row: Mapping[str, Any], column: str) -> bool:
    """Whether this row's figure in `column` is a timing taken under contention."""
    return is_timing(column) and timings_contended(row, is_copied(column))


def measurement_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """How the run's figures were taken: where its copied figures come from, whether other work
    competed for the cores, why MFU is unknown. Absent in older records: measured, uncontended."""
    source = get_path(record, "measurement.costs_from")
    contended = get_path(record, "measurement.contended") is True
    reason = str(get_path(record, "measurement.contended_reason") or "") if contended else ""
    mfu_why = get_path(record, "measurement.mfu_unknown_reason")
    return {
        "measurement.costs_from": source if isinstance(source, str) and source != record["run_id"] else None,
        "measurement.contended": contended,
        "measurement.contended_reason": reason,
        # load_results replaces these with the source run's flag where that run is loaded
        "costs_contended": contended,
        "costs_contended_reason": reason,
        "measurement.mfu_unknown_reason": str(mfu_why) if mfu_why and get_path(record, "cost.mfu_frac") is None else "",
        # a run resumed from a checkpoint timed its training from there on only (experiments/checkpoint.py)
        "checkpoint.resumed_from_step": int(get_path(record, "checkpoint.resumed_from_step") or 0),
        "checkpoint.train_s_before_resume": float(get_path(record, "checkpoint.train_s_before_resume") or 0.0),
    }


# The columns measurement_columns writes, with the run id: all that measurement_source,
# timings_contended and resumed_note read, so that callers can hand them these columns alone
MEASUREMENT_COLUMNS = ("run_id", "measurement.costs_from", "measurement.contended", "measurement.contended_reason",
                       "costs_contended", "costs_contended_reason", "measurement.mfu_unknown_reason",
                       "checkpoint.resumed_from_step", "checkpoint.train_s_before_resume")


def measurement_records(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """The MEASUREMENT_COLUMNS of each run, as dicts: a fraction of the cost of the whole rows."""
    return runs[[c for c in MEASUREMENT_COLUMNS if c in runs.columns]].to_dict("records")


# Timings of the whole training (or run) that a resumed run took from its last start only; its
# per-step figures (throughput, step time, MFU) are medians over the steps it timed, and stand.
RESUME_PARTIAL = ("timing.train_s", "timing.total_s")


def resumed_note(row: Mapping[str, Any]) -> str:
    """'' for a run trained in one go; else from which step it resumed and what its timings cover."""
    step = row.get("checkpoint.resumed_from_step")
    if not isinstance(step, (int, float)) or pd.isna(step) or step <= 0:
        return ""
    before = row.get("checkpoint.train_s_before_resume")
    earlier = f" ({float(before):.0f} s of training in earlier starts)" if isinstance(before, (int, float)) and before > 0 else ""
    return f"resumed from a checkpoint at step {int(step)}: its training and total time cover the steps after it only{earlier}"


def serving_skipped(record: Mapping[str, Any]) -> str:
    """The serving parts a run has no figures for and why ('part: reason; ...'), in words (an
    unexpected error is named, its message left in the record)."""
    skipped = get_path(record, "serving.skipped")
    if not isinstance(skipped, Mapping):
        return ""
    return "; ".join(f"{part}: {in_words(why, 'serving.skipped')}" for part, why in sorted(skipped.items()))


def machine_label(row: Mapping[str, Any]) -> str:
    """The hardware a flattened run ran on, with its CPU kernels' instruction set where it ran on
    the CPU and the record has it ("AMD EPYC (AVX2)"): what sets its rounding, beyond its precision
    and threads. A GPU run's numbers do not depend on its host's CPU kernels."""
    hardware, kernels = str(row.get("prov_hardware", "-")), str(row.get("prov_cpu_kernel_isa", "-"))
    on_cpu = str(row.get("prov_device", "cpu")).startswith("cpu")
    return f"{hardware} ({kernels})" if on_cpu and kernels not in ("-", "nan", "None") else hardware


def provenance_columns(prov: Mapping[str, Any]) -> dict[str, str]:
    """Provenance reduced to comparable strings, so index.html can list each distinct setup once."""
    versions = prov.get("versions") or {}
    gpu = prov.get("gpu")
    commit = prov.get("git_commit")
    return {
        "prov_versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "-",
        "prov_device": str(prov.get("device") or "-"),
        "prov_hardware": str(gpu if gpu else (prov.get("cpu_model") or prov.get("device_name") or "-")),
        # the instruction set torch's CPU kernels ran with: one CPU model name ("AMD EPYC") covers
        # an AVX2-only and an AVX-512 machine, whose kernels round differently
        "prov_cpu_kernel_isa": str(prov.get("cpu_kernel_isa") or "-"),
        "prov_cpu_count": str(prov.get("cpu_count", "-")),
        "prov_git": f"{commit or 'unknown commit'}{' (dirty)' if prov.get('git_dirty') else ''}",
        "prov_torch_threads": str(prov.get("torch_threads", "-")),
        "prov_cuda": str(prov.get("cuda") or "-"),
    }
