"""Read result records, validate them, and flatten them into one pandas DataFrame.

Bad inputs (unreadable JSON, schema-invalid records) never raise: each becomes a `Problem` that
the report prints on stderr and lists in index.html.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

# experiments.record is stdlib-only (tests/test_analysis_load.py checks it stays torch-free), so
# the schema lives in one place.
from experiments.record import SCHEMA_VERSION, schema_problems, semantic_config

__all__ = ["SCHEMA_VERSION", "Problem", "Loaded", "load_results", "flatten", "find_json_files", "setting_items"]

# Row identity in every table: what distinguishes two configurations within one model x task.
# `setting` is a hash of everything else in the config (batch size, alpha, task size, dtype,
# device type, ...), so runs that differ only there are separate rows, never merged as seeds.
ROW_KEY = ["method", "rank", "targets", "precision", "lr", "protocol", "steps", "setting"]
GROUP_KEY = ["model", "task"]
# Cost figures for the cost-details table: row column -> record key in `cost`.
DETAIL_COST_KEYS = {
    "est_mem_bytes": "est_train_mem_growth_bytes", "mem_over_est": "mem_measured_over_estimated",
    "peak_reserved_bytes": "peak_train_reserved_bytes", "samples_per_s": "train_samples_per_s_median",
    "step_time_ms_p10": "step_time_ms_p10", "step_time_ms_p90": "step_time_ms_p90",
    "tokens_per_s_p10": "train_tokens_per_s_p10", "tokens_per_s_p90": "train_tokens_per_s_p90",
    "flops_per_step": "flops_per_step", "peak_flops_per_s": "peak_flops_per_s",
    "lat_ms_base": "latency_ms_base", "lat_ms_unmerged": "latency_ms_unmerged", "lat_ms_merged": "latency_ms_merged",
}
BOTTLENECK_METHODS = {"houlsby", "pfeiffer"}


@dataclass
class Problem:
    """A file that was skipped, or a record dropped as a duplicate, and why."""

    file: str
    reason: str


@dataclass
class Loaded:
    ok: pd.DataFrame  # one row per successful run (after de-duplication)
    failed: pd.DataFrame  # one row per failed run: file, run_id, method, model, task, seed, error
    problems: list[Problem] = field(default_factory=list)


def find_json_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders to their *.json files (recursively); missing paths become problems."""
    files: list[Path] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            # dot-names hold temp files and lr-search trials (.lr_trials/), never table rows
            files.extend(sorted(f for f in p.rglob("*.json") if not any(part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), "no such file or folder"))
    return files, problems


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed record, or None and the reason it cannot be used."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable: {e}"
    except ValueError as e:
        return None, f"corrupt JSON: {e}"
    if not isinstance(record, dict):
        return None, f"not a JSON object but {type(record).__name__}"
    problems = schema_problems(record) + _analysis_problems(record)
    if problems:
        return None, "schema-invalid: " + "; ".join(problems)
    return record, None


def _analysis_problems(record: Mapping[str, Any]) -> list[str]:
    """What the report needs beyond experiments.record's schema check."""
    if record.get("status") != "ok":
        return []
    test = record.get("metrics", {}).get("test")
    if not isinstance(test, dict) or not test:
        return ["metrics.test missing or empty"]
    if not isinstance(record.get("config", {}).get("method"), dict):
        return ["config.method missing"]
    return []


def _num(value: Any) -> float:
    """A float, or NaN for None / non-numbers, so that pandas aggregates skip it."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def rank_of(method_name: str, method_cfg: Mapping[str, Any]) -> tuple[str, float]:
    """Rank label and numeric value. LoRA family: r. Bottleneck adapters: bottleneck size `b<n>`,
    or reduction factor `rf<n>` (numeric value NaN: its size depends on the hidden size)."""
    r = method_cfg.get("r", (method_cfg.get("peft_kwargs") or {}).get("r"))
    if isinstance(r, (int, float)) and not isinstance(r, bool):
        return str(int(r)) if float(r).is_integer() else str(r), float(r)
    size = method_cfg.get("bottleneck_size")
    if isinstance(size, (int, float)):
        return f"b{int(size)}", float(size)
    rf = method_cfg.get("reduction_factor")
    if isinstance(rf, (int, float)):
        return f"rf{int(rf)}", math.nan
    return "-", math.nan


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


def protocol_of(record: Mapping[str, Any]) -> str:
    """How the learning rate was chosen: lr_search (on validation), fixed_lr (one shared lr=...)
    or method_default_lr (the method YAML's lr). Mirrors experiments.lrsearch.protocol_of."""
    search = record.get("lr_search")
    if isinstance(search, Mapping):
        return str(search.get("protocol", "lr_search"))
    return "fixed_lr" if (record.get("config") or {}).get("lr") is not None else "method_default_lr"


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as {dotted.key: value}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def device_type(prov: Mapping[str, Any]) -> str:
    """'cuda:0' -> 'cuda': which kind of device ran, not which card."""
    return str(prov.get("device") or "-").split(":")[0]


def _column_keys(mcfg: Mapping[str, Any]) -> set[str]:
    """Config keys that table columns already show (method, rank, targets, lr, steps, precision),
    plus seed; only the key each column actually read, so nothing distinguishing is lost."""
    keys = {"seed", "method.name", "method.lr", "lr", "steps", "precision"}
    keys.add("method.target_modules" if "target_modules" in mcfg else "method.peft_kwargs.target_modules")
    if mcfg.get("r") is None and (mcfg.get("peft_kwargs") or {}).get("r") is not None:
        return keys | {"method.peft_kwargs.r"}
    for k in ("r", "bottleneck_size", "reduction_factor"):  # rank_of's order
        if mcfg.get(k) is not None:
            return keys | {f"method.{k}"}
    return keys


def setting_items(record: Mapping[str, Any]) -> dict[str, str]:
    """The config beyond the table's label columns, as {dotted key: JSON value}, plus the device
    type (and on CPU the torch thread count that ran): what makes two otherwise identical rows
    different runs."""
    cfg = semantic_config(record.get("config") or {})
    shown = _column_keys(cfg.get("method") or {})
    items = {k: json.dumps(v, sort_keys=True, default=str) for k, v in flat_config(cfg).items() if k not in shown}
    prov = record.get("provenance") or {}
    items["device"] = json.dumps(device_type(prov))
    if device_type(prov) == "cpu" and isinstance(prov.get("torch_threads"), int):
        # the thread count that ran (torch_threads=auto resolves by launcher) sets the order of
        # CPU reductions, so the numbers: runs on different counts are never pooled as seeds
        items["torch_threads"] = json.dumps(prov["torch_threads"])
    return items


def short_hash(items: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(items.items()))).encode()).hexdigest()[:6]


def non_method(items: Mapping[str, str]) -> dict[str, str]:
    """The part of a setting that references must share: method.* differs by design between a
    method and its reference (full FT has no r or alpha)."""
    return {k: v for k, v in items.items() if not k.startswith("method.")}


def _can_merge(cost: Mapping[str, Any]) -> bool | None:
    """None for records from before cost.can_merge existed: unknown, not 'cannot merge'."""
    v = cost.get("can_merge")
    return v if isinstance(v, bool) else None


def flatten(record: Mapping[str, Any], file: str = "") -> dict[str, Any]:
    """One table row from one ok record. Column names say their unit where they have one."""
    cfg = record.get("config", {})
    mcfg = cfg.get("method", {}) or {}
    rank, rank_value = rank_of(record["method"], mcfg)
    test = record.get("metrics", {}).get("test", {}) or {}
    val = record.get("metrics", {}).get("validation", {}) or {}
    params = record.get("params", {}) or {}
    cost = record.get("cost", {}) or {}
    prov = record.get("provenance", {}) or {}
    timing = record.get("timing", {}) or {}
    items = setting_items(record)
    protocol = protocol_of(record)
    return {
        "file": file,
        "run_id": record["run_id"],
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
        "rank": rank,
        "rank_value": rank_value,
        "targets": targets_of(mcfg),
        "setting": short_hash(items),
        "ref_setting": short_hash(non_method(items)),
        "setting_items": items,
        "device": device_type(prov),
        "accuracy": _num(test.get("accuracy")),
        "macro_f1": _num(test.get("macro_f1")),
        "val_accuracy": _num(val.get("accuracy")),
        "trainable_params": _num(params.get("trainable")),
        "total_params": _num(params.get("total")),
        "trainable_pct": _num(params.get("trainable_pct")),
        "peak_mem_bytes": _num(cost.get("peak_train_mem_growth_bytes")),
        "memory_kind": str(cost.get("memory_kind") or "-"),
        "weight_bytes": _num(cost.get("weight_bytes")),
        "tokens_per_s": _num(cost.get("train_tokens_per_s_median")),
        "step_time_ms": _num(cost.get("step_time_ms_median")),
        "mfu": _num(cost.get("mfu")),
        "lat_unmerged": _num(cost.get("latency_overhead_unmerged")),
        "lat_merged": _num(cost.get("latency_overhead_merged")),
        "lat_noise": _num(cost.get("latency_noise_rel")),
        "can_merge": _can_merge(cost),
        "adapter_bytes": _num(cost.get("adapter_bytes")),
        **{col: _num(cost.get(key)) for col, key in DETAIL_COST_KEYS.items()},
        "train_s": _num(timing.get("train_s")),
        "eval_s": _num(timing.get("eval_s")),
        "loss_curve": [float(x) for x in record.get("loss_curve", []) if isinstance(x, (int, float))],
        "finished_at": str(record.get("finished_at") or ""),
        **provenance_columns(prov),
    }


def provenance_columns(prov: Mapping[str, Any]) -> dict[str, str]:
    """Provenance reduced to comparable strings, so index.html can list each distinct setup once."""
    versions = prov.get("versions") or {}
    gpu = prov.get("gpu")
    commit = prov.get("git_commit")
    return {
        "prov_versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "-",
        "prov_device": str(prov.get("device") or "-"),
        "prov_hardware": str(gpu if gpu else (prov.get("cpu_model") or prov.get("device_name") or "-")),
        "prov_cpu_count": str(prov.get("cpu_count", "-")),
        "prov_git": f"{commit or 'unknown commit'}{' (dirty)' if prov.get('git_dirty') else ''}",
        "prov_torch_threads": str(prov.get("torch_threads", "-")),
        "prov_cuda": str(prov.get("cuda") or "-"),
    }


def _failed_row(record: Mapping[str, Any], file: str) -> dict[str, Any]:
    keys = ("run_id", "method", "model", "task", "seed", "precision", "error")
    return {"file": file, **{k: record.get(k) for k in keys}}


def _dedupe(rows: list[dict[str, Any]], problems: list[Problem]) -> list[dict[str, Any]]:
    """One run per (group, row, seed): a re-run of the same configuration supersedes the older
    one (by finished_at) instead of being counted as an extra seed. The row key holds `setting`,
    so runs that differ in any other config value both stay."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["finished_at"]):
        key = tuple(row[k] for k in GROUP_KEY + ROW_KEY + ["seed"])
        if key in latest:
            old = latest[key]
            problems.append(Problem(old["file"], f"superseded by newer run of the same configuration and seed: {row['file']}"))
        latest[key] = row
    return list(latest.values())


def load_results(paths: Iterable[str | Path]) -> Loaded:
    """Everything under `paths`, validated: ok runs, failed runs, and problems by file name."""
    files, problems = find_json_files(paths)
    ok_rows: list[dict[str, Any]] = []
    failed_rows: list[dict[str, Any]] = []
    for path in files:
        record, reason = read_record(path)
        if record is None:
            problems.append(Problem(str(path), reason or "unknown"))
        elif record["status"] != "ok":  # failed, diverged, interrupted: listed, never in a mean
            failed_rows.append(_failed_row(record, str(path)))
        else:
            try:
                ok_rows.append(flatten(record, str(path)))
            except (AttributeError, KeyError, TypeError, ValueError) as e:  # odd shapes the schema check let through
                problems.append(Problem(str(path), f"schema-invalid: cannot read it as a run ({type(e).__name__}: {e})"))
    ok_rows = _dedupe(ok_rows, problems)
    ok = pd.DataFrame(ok_rows) if ok_rows else pd.DataFrame(columns=list(flatten_columns()))
    failed = pd.DataFrame(failed_rows, columns=["file", "run_id", "method", "model", "task", "seed", "precision", "error"])
    return Loaded(ok=ok, failed=failed, problems=problems)


def flatten_columns() -> list[str]:
    """Column names of `flatten`, for an empty DataFrame that still has the right shape."""
    dummy = {"run_id": "", "method": "", "model": "", "task": "", "seed": 0, "precision": "", "config": {"method": {}}}
    return list(flatten(dummy).keys())
