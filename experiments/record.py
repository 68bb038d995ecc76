"""The result record: schema, stable run id, atomic write, skip-if-done.

The record is the only contract between experiments/ and analysis/.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

# 2: measured fields named by experiments.fields (units in the names); how a run was measured
# moved from `cost` to `measurement`, what its method can do to `method_info`.
SCHEMA_VERSION = 2

# Keys that do not change what a run computes, so they stay out of its id.
NON_SEMANTIC_KEYS = {"results_dir", "force", "progress", "logger", "reuse_measurements", "precision_requested",
                     "checkpoint_every_steps"}  # a resumed run ends with the same numbers (tests/test_checkpoint.py)

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
# ok: a result. failed: crashed or bad input. diverged: the loss became NaN/inf at
# `diverged_at_step`. interrupted: stopped by SIGTERM/SIGINT. Only ok counts as done.
REQUIRED_BY_STATUS = {
    "ok": REQUIRED_OK,
    "failed": {"error": str},
    "diverged": {"error": str, "diverged_at_step": int, "loss_curve": list},
    "interrupted": {"error": str},
}
CLAIMS_DIR = ".claims"


class ResultWriteError(OSError):
    """A result could not be written (disk full, folder not writable): one line, no partial file."""


def semantic_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config minus what does not change what a run computes: output and logging keys, and
    the method's `report` block (how the report draws it)."""
    out = {k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS and k != "hydra"}
    if isinstance(out.get("method"), Mapping) and "report" in out["method"]:
        out["method"] = {k: v for k, v in out["method"].items() if k != "report"}
    if out.get("compile") is False:  # eager, as every run was before the switch: ids stay
        del out["compile"]
    if isinstance(out.get("objective"), Mapping) and out["objective"].get("name") == "sft":
        del out["objective"]  # supervised, as every run was before objectives: ids stay
    dist = out.get("distributed")
    if isinstance(dist, Mapping):
        # one process is what every run had before runs could span several (their ids stay);
        # how long a collective may wait never changes a number
        out["distributed"] = {k: v for k, v in dist.items() if k != "timeout_s"}
        if dist.get("strategy", "none") == "none":
            del out["distributed"]
    return out


def file_safe(name: Any) -> str:
    """A model's name as part of a file name: a hub id (ORG/NAME) or a folder (model=hf) by its
    last two parts joined by `--` (`Qwen--Qwen2.5-0.5B`); a name without `/` as it is, so that
    every existing id stays. The run id's hash holds the whole name."""
    name = str(name)
    if "/" not in name:
        return name
    return "--".join([p for p in name.split("/") if p not in ("", ".", "..")][-2:])


def run_id(config: Mapping[str, Any]) -> str:
    """Readable prefix + hash of the resolved config minus non-semantic keys. `precision: auto`
    is hashed as what it resolves to on this machine: the id names what ran."""
    if config.get("precision") == "auto":
        from peftbench.experiments.precision import resolve_config

        config = dict(config)
        resolve_config(config)
    digest = hashlib.sha256(json.dumps(semantic_config(config), sort_keys=True, default=str).encode()).hexdigest()[:10]
    method = config["method"]
    parts = [file_safe(config["model"]["name"]), config["task"]["name"], method["name"]]
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=_json_default, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_error(path: Path, e: OSError) -> ResultWriteError:
    fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
    return ResultWriteError(e.errno, f"cannot write result {path}: {e.strerror or e}; {fix}, or set results_dir=ANOTHER_FOLDER")


def check_results_dir(results_dir: str | Path) -> str | None:
    """Why results cannot go to `results_dir` (created if missing), or None when they can."""
    d = Path(results_dir)
    if d.exists() and not d.is_dir():
        return f"results_dir={results_dir} is a file, not a folder; move it away or set results_dir=ANOTHER_FOLDER"
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"results_dir={results_dir} cannot be used: {e.strerror or e}; set results_dir=A_WRITABLE_FOLDER"
    return None


@contextmanager
def claim(path: Path) -> Iterator[None]:
    """Hold the run's claim (an exclusive lock on <results_dir>/.claims/<run id>.lock) while it
    trains: a second process that reaches the same run (two identical sweeps on one folder) waits,
    then finds the ok result and skips it, so each run trains once. A dead holder's lock is freed
    by the kernel, and the waiter then runs it."""
    path = Path(path)
    lock = path.parent / CLAIMS_DIR / f"{path.stem}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"wait {path.stem}: another process is running it", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def is_done(path: Path) -> bool:
    """A valid ok result exists. Failed, diverged, interrupted, corrupt or schema-invalid results
    do not count: they are run again."""
    return existing(path) == ("ok", None)


def existing(path: Path) -> tuple[str | None, str | None]:
    """(status, problem) of the result at `path`: (None, None) when there is none; problem names
    what makes an existing file unusable (corrupt JSON, schema-invalid)."""
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        rec = read(path)
    except (OSError, ValueError) as e:
        return None, f"corrupt ({type(e).__name__}: {e})"
    if not isinstance(rec, dict):
        return None, f"corrupt (a JSON {type(rec).__name__}, not an object)"
    problems = schema_problems(rec)
    if problems:
        return None, "schema-invalid (" + "; ".join(problems) + ")"
    return str(rec["status"]), None


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
    if record.get("status") in REQUIRED_BY_STATUS:
        required.update(REQUIRED_BY_STATUS[record["status"]])
    else:
        problems.append(f"status {record.get('status')!r} is not one of {', '.join(REQUIRED_BY_STATUS)}")
    for key, typ in required.items():
        if key not in record:
            problems.append(f"missing {key}")
        elif not isinstance(record[key], typ):
            problems.append(f"{key} is {type(record[key]).__name__}, expected {typ.__name__}")
    return problems
