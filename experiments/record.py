"""The result record: schema, stable run id, atomic write, skip-if-done.

The record is the only contract between experiments/ and analysis/.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

# 2: measured fields named by experiments.fields (units in the names); how a run was measured
# moved from `cost` to `measurement`, what its method can do to `method_info`.
SCHEMA_VERSION = 2
# ok and diverged runs carry results; failed and interrupted ones carry an error.
STATUSES = ("ok", "failed", "diverged", "interrupted")

# Keys that do not change what a run computes, so they stay out of its id.
NON_SEMANTIC_KEYS = {"results_dir", "force", "progress", "logger"}

REQUIRED = {
    "schema_version": int,
    "run_id": str,
    "status": str,
    "config": dict,
    "method": str,
    "model": str,
    "task": str,
    "seed": int,
    "precision": str,
    "provenance": dict,
}
REQUIRED_OK = {"params": dict, "metrics": dict, "loss_curve": list, "timing": dict, "cost": dict}


def semantic_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config minus what does not change what a run computes: output and logging keys, and
    the method's `report` block (how the report draws it)."""
    out = {k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS and k != "hydra"}
    if isinstance(out.get("method"), Mapping) and "report" in out["method"]:
        out["method"] = {k: v for k, v in out["method"].items() if k != "report"}
    return out


def run_id(config: Mapping[str, Any]) -> str:
    """Readable prefix + hash of the resolved config minus non-semantic keys."""
    digest = hashlib.sha256(json.dumps(semantic_config(config), sort_keys=True, default=str).encode()).hexdigest()[:10]
    method = config["method"]
    parts = [config["model"]["name"], config["task"]["name"], method["name"]]
    if method.get("r") is not None:
        parts.append(f"r{method['r']}")
    elif method.get("bottleneck_size") is not None:
        parts.append(f"b{method['bottleneck_size']}")
    elif method.get("reduction_factor") is not None:
        parts.append(f"rf{method['reduction_factor']}")
    parts.append(f"s{config['seed']}")
    return "__".join(str(p) for p in parts) + "__" + digest


def result_path(results_dir: str | Path, rid: str) -> Path:
    return Path(results_dir) / f"{rid}.json"


def write_atomic(path: Path, record: Mapping[str, Any]) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see the old file or
    the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=_json_default, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def is_done(path: Path) -> bool:
    """An ok result exists. Failed or unreadable results do not count: they are run again."""
    try:
        return read(path).get("status") == "ok"
    except (OSError, ValueError):
        return False


def protocol_of(rec: Mapping[str, Any]) -> str:
    """How the learning rate was chosen: lr_search (on validation), fixed_lr (one shared lr=...)
    or method_default_lr (the method YAML's lr)."""
    if isinstance(rec.get("lr_search"), Mapping):
        return str(rec["lr_search"].get("protocol", "lr_search"))
    return "fixed_lr" if (rec.get("config") or {}).get("lr") is not None else "method_default_lr"


def schema_problems(record: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a record's shape; empty when it is valid."""
    problems = []
    if record.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {record.get('schema_version')!r} is not {SCHEMA_VERSION}")
    required = dict(REQUIRED)
    if record.get("status") == "ok":
        required.update(REQUIRED_OK)
    elif record.get("status") in ("failed", "interrupted"):
        required["error"] = str
    elif record.get("status") != "diverged":
        problems.append(f"status {record.get('status')!r} is not one of {', '.join(STATUSES)}")
    for key, typ in required.items():
        if key not in record:
            problems.append(f"missing {key}")
        elif not isinstance(record[key], typ):
            problems.append(f"{key} is {type(record[key]).__name__}, expected {typ.__name__}")
    return problems
