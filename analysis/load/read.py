"""Reading result records: finding the files, parsing and validating each, and the one call that
loads a folder into rows (`load_results`). Bad inputs never raise: each becomes a `Problem` that
the report prints on stderr and lists in index.html."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from peftbench.experiments import metric_spec
from peftbench.experiments.decide import CRITERION_FILE
from peftbench.experiments.record import SCHEMA_VERSION, schema_problems
from peftbench.methods.errors import ConfigError
from peftbench.analysis.load.identity import GROUP_KEY, ROW_KEY
from peftbench.analysis.load.upgrade import upgrade_v1
from peftbench.analysis.load.rows import flatten
from peftbench.analysis.load.words import in_words


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


def skipped_below(root: Path, folder: Path) -> bool:
    """Whether reading `root` passes over `folder` under it: a dot-folder (temp files, lr-search
    trials) or reference/ (the committed records, read only when named)."""
    return any(part.startswith(".") or part == "reference" for part in folder.relative_to(root).parts)


def find_json_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders to their *.json files (recursively); missing paths become problems."""
    files: list[Path] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            # dot-names hold temp files and lr-search trials (.lr_trials/), never table rows;
            # reference/ holds the project's committed records, read only when named; a folder
            # beside its convergence criterion holds a study's budget check, not its evidence
            # (analysis.convergence reads it)
            checks = {c.parent for c in p.rglob(CRITERION_FILE) if c.parent != p}  # named itself, it is read
            files.extend(sorted(f for f in p.rglob("*.json") if not skipped_below(p, f.parent) and not checks & set(f.parents)))
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), "no such file or folder"))
    return files, problems



def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed record (schema 1 upgraded to 2), or None and the reason it cannot be used."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, "unreadable: not UTF-8 text"
    except OSError as e:
        return None, f"unreadable: {e.strerror or 'the file cannot be read'}"
    except json.JSONDecodeError as e:
        return None, f"corrupt JSON (at line {e.lineno}, column {e.colno})"
    except ValueError:  # what the parser refuses beyond its syntax (an integer of thousands of digits)
        return None, "corrupt JSON (a value the parser refuses)"
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


def _analysis_problems(record: Mapping[str, Any]) -> list[str]:
    """What the report needs beyond experiments.record's schema check."""
    if record.get("status") not in RESULT_STATUSES:
        return []
    test = record.get("metrics", {}).get("test")
    if not isinstance(test, dict) or not test:
        return ["metrics.test missing or empty"]
    if not isinstance(record.get("config", {}).get("method"), dict):
        return ["config.method missing"]
    try:
        metric_spec.of_record(record)
    except ConfigError as e:  # nothing says which metric ranks this run
        return [f"no usable metric declaration (metric_spec, or config.task.metrics): {e}"]
    return []


FAILED_COLUMNS = ["file", "run_id", "status", "method", "model", "task", "seed", "precision", "error"]


def _failed_row(record: Mapping[str, Any], file: str) -> dict[str, Any]:
    """A run without results to average: failed, interrupted, or diverged (its loss went NaN or
    inf; listed with the step where that happened, never averaged)."""
    row = {"file": file, **{k: record.get(k) for k in FAILED_COLUMNS[1:]}}
    if record.get("status") == "diverged" and not row["error"]:
        row["error"] = f"diverged: loss not finite at step {record.get('diverged_at_step', '?')}"
    row["error"] = in_words(row["error"], "error") if row["error"] else row["error"]
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
                problems.append(Problem(str(path), f"schema-invalid: a field has a shape no run writes (an unexpected "
                                                   f"{type(e).__name__} while reading it)"))
    ok_rows = _dedupe(ok_rows, problems)
    _source_contention(ok_rows)
    ok = pd.DataFrame(ok_rows) if ok_rows else pd.DataFrame(columns=list(flatten_columns()))
    ok = _as_objects(ok)
    failed = pd.DataFrame(failed_rows, columns=FAILED_COLUMNS)
    return Loaded(ok=ok, failed=failed, problems=problems)


def _as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Python objects rather than pandas' Arrow-backed strings. Each Arrow column
    is a block of its own, and the report takes rows out of this frame thousands of times: one
    object block is taken at once (`scripts/readme_tables.py --check` about 8% faster on Zen 3)."""
    text = [c for c, t in frame.dtypes.items() if isinstance(t, pd.StringDtype)]
    return frame.astype(dict.fromkeys(text, object)).copy() if text else frame  # copy: one block per dtype


def flatten_columns() -> list[str]:
    """Column names of `flatten`, for an empty DataFrame that still has the right shape."""
    dummy = {"run_id": "", "method": "", "model": "", "task": "", "seed": 0, "precision": "", "config": {"method": {}}}
    return list(flatten(dummy).keys())
