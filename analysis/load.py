"""Read result records, validate them, and flatten them into one pandas DataFrame.

Bad inputs (unreadable JSON, schema-invalid records, records of a newer schema) never raise:
each becomes a `Problem` that the report prints on stderr and lists in index.html.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

# experiments.record and experiments.fields are stdlib-only (tests check analysis/ stays
# torch-free), so the record's schema and field names live in one place for both halves.
from analysis.meta import MetricSpec, capacity_of, method_report, primary_of, sign, task_metrics
from experiments.fields import BY_PATH, FIELDS, V1_RENAMES, get_path, serving_depends_on_weights
from experiments.record import SCHEMA_VERSION, protocol_of, schema_problems, semantic_config

__all__ = ["SCHEMA_VERSION", "READABLE_VERSIONS", "Problem", "Loaded", "load_results", "flatten", "find_json_files", "setting_items",
           "measurement_source", "is_copied", "is_timing", "contended_for", "timings_contended"]

# Row identity in every table: what distinguishes two configurations within one model x task.
# `setting` is a hash of everything else in the config (batch size, alpha, task size, dtype,
# device type, ...), so runs that differ only there are separate rows, never merged as seeds.
ROW_KEY = ["method", "rank", "targets", "precision", "lr", "protocol", "steps", "setting"]
GROUP_KEY = ["model", "task"]
# Schema versions this report reads: 1 is upgraded on load (upgrade_v1); anything else (a newer
# peftbench's records) is skipped with that reason.
READABLE_VERSIONS = (1, SCHEMA_VERSION)
# Statuses whose results enter the tables. A diverged run is listed with the failed ones and
# never averaged.
RESULT_STATUSES = ("ok",)




@dataclass
class Problem:
    """A file that was skipped, or a record dropped as a duplicate, and why."""

    file: str
    reason: str


@dataclass
class Loaded:
    ok: pd.DataFrame  # one row per successful run (after de-duplication)
    failed: pd.DataFrame  # one row per run without results to average (failed, interrupted, diverged)
    problems: list[Problem] = field(default_factory=list)


def find_json_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders to their *.json files (recursively); missing paths become problems."""
    files: list[Path] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            # dot-names hold temp files and lr-search trials (.lr_trials/), never table rows;
            # reference/ holds the project's committed records, read only when named
            files.extend(sorted(f for f in p.rglob("*.json")
                                if not any(part.startswith(".") or part == "reference" for part in f.relative_to(p).parent.parts)))
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), "no such file or folder"))
    return files, problems



def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed record (schema 1 upgraded to 2), or None and the reason it cannot be used."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable: {e}"
    except ValueError as e:
        return None, f"corrupt JSON: {e}"
    if not isinstance(record, dict):
        return None, f"not a JSON object but {type(record).__name__}"
    version = record.get("schema_version")
    if version not in READABLE_VERSIONS:
        return None, (f"schema_version {version!r} cannot be read: this report reads versions "
                      f"{', '.join(map(str, READABLE_VERSIONS))}; use the peftbench that wrote it")
    if version == 1:
        record = upgrade_v1(record)
    problems = schema_problems(record) + _analysis_problems(record)
    if problems:
        return None, "schema-invalid: " + "; ".join(problems)
    return record, None


def upgrade_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record in schema-2 names (experiments.fields.V1_RENAMES). Version 1 had no
    `measurement` or `method_info` section, no forgetting and no base-model score: those stay
    absent ('–' in the report). It had no method report block either: the package's YAML of the
    same method name supplies it, else the defaults apply."""
    out = json.loads(json.dumps(record))
    for old, new in V1_RENAMES.items():
        section, key = old.split(".", 1)
        src = out.get(section)
        if isinstance(src, dict) and key in src:
            value = src.pop(key)
            new_section, new_key = new.split(".", 1)
            out.setdefault(new_section, {})[new_key] = value
    method = out.get("config", {}).get("method")
    if isinstance(method, dict) and "report" not in method:
        report = shipped_report(str(method.get("name", "")))
        if report is not None:
            method["report"] = report
    out["schema_version"] = SCHEMA_VERSION
    return out


METHOD_CONF = Path(__file__).resolve().parents[1] / "conf" / "method"


def shipped_report(method: str) -> dict[str, Any] | None:
    """The report block of the package's own YAML for a method of that name: version-1 records
    predate report blocks, and the methods they ran are the shipped ones."""
    import yaml

    path = METHOD_CONF / f"{method}.yaml"
    try:
        report = yaml.safe_load(path.read_text()).get("report") if path.is_file() else None
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return report if isinstance(report, dict) else None


def _analysis_problems(record: Mapping[str, Any]) -> list[str]:
    """What the report needs beyond experiments.record's schema check."""
    if record.get("status") not in RESULT_STATUSES:
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
    """Config keys that table columns already show (method, capacity, targets, lr, steps,
    precision), plus seed; only the key each column actually read, so nothing distinguishing is
    lost."""
    keys = {"seed", "method.name", "method.lr", "lr", "steps", "precision"}
    keys.add("method.target_modules" if "target_modules" in mcfg else "method.peft_kwargs.target_modules")
    capacity = method_report(str(mcfg.get("name", "")), mcfg)["capacity_key"]
    return keys | ({f"method.{capacity}"} if capacity else set())


def setting_items(record: Mapping[str, Any]) -> dict[str, str]:
    """The config beyond the table's label columns, as {dotted key: JSON value}, plus the device
    type (and on CPU the torch thread count that ran): what makes two otherwise identical rows
    different runs."""
    cfg = semantic_config(record.get("config") or {})
    shown = _column_keys(cfg.get("method") or {})
    # the method's report block is display metadata, not a setting
    items = {k: json.dumps(v, sort_keys=True, default=str) for k, v in flat_config(cfg).items()
             if k not in shown and not k.startswith("method.report.")}
    prov = record.get("provenance") or {}
    items["device"] = json.dumps(device_type(prov))
    if device_type(prov) == "cpu" and isinstance(prov.get("torch_threads"), int):
        # the thread count that ran (torch_threads=auto resolves by launcher) sets the order of
        # CPU reductions, so the numbers: runs on different counts are never pooled as seeds
        items["torch_threads"] = json.dumps(prov["torch_threads"])
    return items


def setting_value(items: Mapping[str, str], key: str) -> Any:
    """A config key's value in a run's setting. `a|b` names one quantity that tasks set by
    different keys (the training-set size: task.n_train on generated tasks,
    task.max_train_samples on file datasets): the first of them the run sets."""
    for name in key.split("|"):
        raw = items.get(name)
        value = json.loads(raw) if isinstance(raw, str) else raw
        if value is not None:
            return value
    return None


def short_hash(items: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(items.items()))).encode()).hexdigest()[:6]


# What a run measures besides training never changes what it trains (measurement runs on its own
# random state), so a reference need not share it: full FT with latency off is LoRA's reference.
MEASUREMENT_ONLY = ("measure.", "forgetting.", "lm_eval.")


def trained_items(items: Mapping[str, str]) -> dict[str, str]:
    """The part of a setting that sets what is trained: measurement switches change no trained
    number."""
    return {k: v for k, v in items.items() if not k.startswith(MEASUREMENT_ONLY)}


def non_method(items: Mapping[str, str]) -> dict[str, str]:
    """The part of a setting that references must share: what is trained, less method.*, which
    differs by design between a method and its reference (full FT has no r or alpha)."""
    return {k: v for k, v in trained_items(items).items() if not k.startswith("method.")}


def setting_labels(ok: pd.DataFrame) -> dict[str, str]:
    """Per setting hash, the trained-setting keys whose values differ between these runs'
    settings (batch size, training-set size, ...): what a reader needs instead of the hash.
    "" where nothing but the method's own parameters or measurement switches differ."""
    items = {s: non_method(it) for s, it in zip(ok["setting"], ok["setting_items"])}
    keys = sorted({k for it in items.values() for k in it})
    vary = [k for k in keys if len({it.get(k) for it in items.values()}) > 1]
    return {s: ", ".join(f"{k}={it.get(k, '-')}" for k in vary) for s, it in items.items()}


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
    out["primary"] = out.get(f"metrics.test.{name}", math.nan)
    out["val_primary"] = out.get(f"metrics.validation.{name}", math.nan)
    out["primary_before"] = out.get(f"metrics_before.test.{name}", math.nan)
    # positive = better than the base model, whichever way the metric points
    out["gain_over_base"] = sign(out["primary_direction"]) * (out["primary"] - out["primary_before"])
    out["task_metrics"] = tuple((s.name, s.direction, s.primary) for s in specs)
    return out


def floor_columns(record: Mapping[str, Any], name: str, task_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a run must beat on validation to count as having learned (analysis.guards): the better
    of the majority-class predictor (`metrics_majority`; for records that predate it, recomputed
    for generated tasks) and the base model before training, and the number of validation items
    its score is a proportion of."""
    from experiments.data.base import generated_majority

    majority = ((record.get("metrics_majority") or {}).get("validation") or {}).get(name)
    if majority is None and task_cfg is not None:
        majority = ((generated_majority(task_cfg) or {}).get("validation") or {}).get(name)
    base = ((record.get("metrics_before") or {}).get("validation") or {}).get(name)
    floors = {k: float(v) for k, v in (("the majority class", majority), ("the base model", base)) if isinstance(v, (int, float))}
    n = (record.get("eval_items") or {}).get("validation")
    if n is None and task_cfg is not None and isinstance(task_cfg.get("n_validation"), int):
        n = task_cfg["n_validation"]
    if not floors:
        return {"val_floor": math.nan, "val_floor_source": "-", "val_items": float(n) if n else math.nan}
    source = max(floors, key=floors.get)
    return {"val_floor": floors[source], "val_floor_source": source, "val_items": float(n) if n else math.nan}


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
    rank, rank_value = capacity_of(mcfg, rep["capacity_key"])
    task_cfg = cfg.get("task") if isinstance(cfg.get("task"), Mapping) else None
    specs = task_metrics(task_cfg, (record.get("metrics") or {}).get("test") or {})
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
        "rank": rank,
        "rank_value": rank_value,
        "targets": targets_of(mcfg),
        "setting": short_hash(items),
        "ref_setting": short_hash(non_method(items)),
        "setting_items": items,
        "device": device_type(prov),
        **rep,
        **metric_columns(record, specs),
        # per-item test outcomes (experiments/outcomes.py), for the paired bootstrap; None in older records
        "items.test": (record.get("items") or {}).get("test"),
        **floor_columns(record, primary_of(specs).name if primary_of(specs) else "-", task_cfg),
        **lm_eval_columns(record.get("lm_eval")),
        **forgetting_columns(record.get("forgetting")),
        **{f.path: _num(get_path(record, f.path)) for f in FIELDS},
        "measurement.memory_kind": str(get_path(record, "measurement.memory_kind") or "-"),
        **measurement_columns(record),
        "serving_skipped": serving_skipped(record),
        # None for records from before can_merge existed: unknown, not 'cannot merge'
        "method_info.can_merge": can_merge if isinstance(can_merge, bool) else None,
        "loss_curve": [float(x) for x in record.get("loss_curve", []) if isinstance(x, (int, float))],
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
    }


def serving_skipped(record: Mapping[str, Any]) -> str:
    """The serving parts a run has no figures for and why ('part: reason; ...'), as recorded."""
    skipped = get_path(record, "serving.skipped")
    if not isinstance(skipped, Mapping):
        return ""
    return "; ".join(f"{part}: {why}" for part, why in sorted(skipped.items()))


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



FAILED_COLUMNS = ["file", "run_id", "status", "method", "model", "task", "seed", "precision", "error"]


def _failed_row(record: Mapping[str, Any], file: str) -> dict[str, Any]:
    """A run without results to average: failed, interrupted, or diverged (its loss went NaN or
    inf; listed with the step where that happened, never averaged)."""
    row = {"file": file, **{k: record.get(k) for k in FAILED_COLUMNS[1:]}}
    if record.get("status") == "diverged" and not row["error"]:
        row["error"] = f"diverged: loss not finite at step {record.get('diverged_at_step', '?')}"
    return row


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


def _source_contention(rows: list[dict[str, Any]]) -> None:
    """A copied figure was timed by its source run: it is contended when that run was, whatever
    the copying run's own training met. Where the source is not loaded, the row's own flag stays."""
    by_id = {r["run_id"]: r for r in rows}
    for row in rows:
        source = by_id.get(row["measurement.costs_from"] or "")
        if source is not None:
            row["costs_contended"] = source["measurement.contended"]
            row["costs_contended_reason"] = source["measurement.contended_reason"]


def load_results(paths: Iterable[str | Path]) -> Loaded:
    """Everything under `paths`, validated: ok runs, failed runs, and problems by file name."""
    files, problems = find_json_files(paths)
    ok_rows: list[dict[str, Any]] = []
    failed_rows: list[dict[str, Any]] = []
    for path in files:
        record, reason = read_record(path)
        if record is None:
            problems.append(Problem(str(path), reason or "unknown"))
        elif record["status"] not in RESULT_STATUSES:
            failed_rows.append(_failed_row(record, str(path)))
        else:
            try:
                ok_rows.append(flatten(record, str(path)))
            except (AttributeError, KeyError, TypeError, ValueError) as e:  # odd shapes the schema check let through
                problems.append(Problem(str(path), f"schema-invalid: cannot read it as a run ({type(e).__name__}: {e})"))
    ok_rows = _dedupe(ok_rows, problems)
    _source_contention(ok_rows)
    ok = pd.DataFrame(ok_rows) if ok_rows else pd.DataFrame(columns=list(flatten_columns()))
    failed = pd.DataFrame(failed_rows, columns=FAILED_COLUMNS)
    return Loaded(ok=ok, failed=failed, problems=problems)


def flatten_columns() -> list[str]:
    """Column names of `flatten`, for an empty DataFrame that still has the right shape."""
    dummy = {"run_id": "", "method": "", "model": "", "task": "", "seed": 0, "precision": "", "config": {"method": {}}}
    return list(flatten(dummy).keys())
