"""Loading splits through `datasets.load_dataset`, from the hub or from local files, with the
checks and the split carving that every real-data builder shares.

Two sources, one code path:
  * hub: `load_dataset(path, name, revision=...)` with the canonical hub names;
  * local files: `load_dataset("csv" | "json", data_files={split: path, ...})`, the same
    loader the hub versions are built from.

Splits are carved with a seeded permutation, so every method and every training seed sees the
same train/validation/test examples. Subsets (`max_train_samples`, `max_eval_samples`) are taken
after carving, so the validation set does not change when the training subset does.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from peftbench.methods.base import ConfigError, positive_int

SPLITS = ("train", "validation", "test")


# -- cheap checks (run in validate_task, before any model is loaded) ----------------------------

def offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_file(value: Any, key: str) -> Path:
    """A data file that exists and is not empty, or one ConfigError line naming `key`."""
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}: file {path} does not exist; check the path (a relative one starts from {Path.cwd()})")
    if not path.is_file():
        raise ConfigError(f"{key}: {path} is not a file")
    if path.stat().st_size == 0 or not path.read_text(encoding="utf-8", errors="replace").strip():
        raise ConfigError(f"{key}: file {path} is empty; give it a header and rows (CSV) or one JSON object per line (JSONL)")
    bad = _not_utf8(path)
    if bad:
        raise ConfigError(f"{key}: file {path} is not UTF-8 ({bad}); re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT")
    return path


def _not_utf8(path: Path) -> str | None:
    """Where the file stops being UTF-8, or None; read in chunks, so a big file costs no memory."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                return f"byte {chunk[e.start]:#04x} at offset {offset + e.start}"
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "a multi-byte character cut off at the end"
    return None


def check_csv_rows(path: Path, delimiter: str, quoting: int | None = None) -> None:
    """Every row parses and has no more fields than the header (the loader would fail on it
    with a message that names neither the line nor the fix)."""
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting is None else quoting, strict=True)
        try:
            header = next(reader, [])
            for row in reader:
                if len(row) > len(header):
                    raise ConfigError(f"file {path} line {reader.line_num} has {len(row)} fields but its header has {len(header)}; "
                                      f"check task.delimiter (now {delimiter!r}) and quote fields that contain it")
        except csv.Error as e:
            raise ConfigError(f"file {path} is malformed CSV at line {reader.line_num} ({e}); "
                              f"check its quotes, task.delimiter and task.quoting") from None


def file_format(path: Path, default: str | None = None) -> str:
    """csv (also .tsv) or json (also .jsonl): the `load_dataset` builder for a file."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv", ".txt"}:
        return "csv"
    if suffix in {".json", ".jsonl"}:
        return "json"
    if default:
        return default
    raise ConfigError(f"cannot tell the format of {path} from its suffix; use .csv, .tsv, .json or .jsonl")


def delimiter_for(path: Path, delimiter: Any) -> str:
    if delimiter in (None, "", "auto"):
        return "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    return {"tab": "\t", "\\t": "\t", "comma": ","}.get(str(delimiter), str(delimiter))


def header_columns(path: Path, fmt: str, delimiter: str = ",") -> list[str] | None:
    """Column names from the first line (csv) or the first record (json/jsonl); None if unknown."""
    if fmt == "csv":
        import csv

        # utf-8-sig: some distributed GLUE TSVs (MRPC) start with a byte-order mark
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline().rstrip("\r\n")
            if not any(line.strip() for line in f):
                raise ConfigError(f"file {path} is empty (a header and no rows); add rows under the header")
        return next(csv.reader([first], delimiter=delimiter)) if first else None
    with path.open(encoding="utf-8") as f:
        head = f.read(1 << 16)
    if head.lstrip().startswith("["):  # one JSON array: read it whole if it is not huge
        if path.stat().st_size > (64 << 20):
            return None
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"file {path} is not valid JSON: {e}; fix it, or write one JSON object per line (.jsonl)") from None
        if not rows:
            raise ConfigError(f"file {path} is empty (an empty JSON array)")
        return list(rows[0]) if isinstance(rows[0], dict) else None
    columns = None
    with path.open(encoding="utf-8") as f:  # JSON Lines: every line must parse
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"file {path} line {n} is not valid JSON ({e.msg}); JSON Lines hold one JSON object per line") from None
            if not isinstance(row, dict):
                raise ConfigError(f"file {path} line {n} is a JSON {type(row).__name__}, not an object; JSON Lines hold one JSON object per line")
            columns = list(row) if columns is None else columns
    return columns


def require_columns(columns: Sequence[str] | None, needed: Iterable[str], where: str, renames: Mapping[str, str] | None = None,
                    hint: str = "") -> None:
    if columns is None:
        return
    have = [renames.get(c, c) for c in columns] if renames else list(columns)
    missing = [c for c in needed if c not in have]
    if missing:
        raise ConfigError(f"{where} has no column {', '.join(repr(c) for c in missing)}; its columns: {', '.join(columns)}{hint}")


def optional_count(cfg: Mapping[str, Any], key: str, allow_auto: bool = False) -> None:
    v = cfg.get(key)
    if v is None or (allow_auto and v == "auto"):
        return
    if not positive_int(v):
        hint = "null, auto or a positive integer" if allow_auto else "null or a positive integer"
        raise ConfigError(f"task.{key} must be {hint}, got {v!r}")


def percentage(cfg: Mapping[str, Any], key: str) -> float:
    v = cfg.get(key) or 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 100:
        raise ConfigError(f"task.{key} must be a number in [0, 100), got {v!r}")
    return float(v)


def hub_check(dataset: Mapping[str, Any]) -> None:
    """With the hub offline, a hub dataset must already be in the local datasets cache."""
    if not offline():
        return
    import datasets

    try:
        datasets.load_dataset_builder(str(dataset["path"]), dataset.get("name"), revision=dataset.get("revision"))
    except Exception:
        raise ConfigError(
            f"dataset {dataset['path']}{'/' + dataset['name'] if dataset.get('name') else ''} is not in the local datasets cache "
            "and the hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); go online once, or load local files with task.data_files.<split>=PATH"
        ) from None


# -- loading -----------------------------------------------------------------------------------

def load_hub(dataset: Mapping[str, Any]):
    import datasets

    try:
        return datasets.load_dataset(str(dataset["path"]), dataset.get("name"), revision=dataset.get("revision"))
    except (ConnectionError, FileNotFoundError) as e:
        raise ConfigError(f"cannot load dataset {dataset['path']} ({e}); load local files with task.data_files.<split>=PATH") from None


def load_files(files: Mapping[str, Path], fmt: str, **kwargs):
    """`load_dataset("csv"|"json", data_files=...)`: each split from its own file."""
    import datasets

    if fmt == "csv":
        kwargs.setdefault("na_filter", False)  # "null", "NA", "nan" are text, not missing values
        kwargs.setdefault("encoding", "utf-8-sig")  # a leading byte-order mark is not part of a column name
    try:
        return datasets.load_dataset(fmt, data_files={k: str(v) for k, v in files.items()}, **kwargs)
    except Exception as e:  # pandas/pyarrow parse errors: one line that names the files
        if "empty" in str(e).lower() or "No columns to parse" in str(e) or "corresponds to no data" in str(e):
            raise ConfigError(f"data file(s) {', '.join(map(str, files.values()))}: empty ({e})") from None
        root = e
        while root.__cause__ or root.__context__:  # datasets wraps the parser's own message
            root = root.__cause__ or root.__context__
        first = (str(root).strip().splitlines() or [type(root).__name__])[0]
        fix = "check task.delimiter and task.quoting" if fmt == "csv" else "use one JSON array, or one JSON object per line"
        raise ConfigError(f"cannot parse {', '.join(map(str, files.values()))} as {fmt}: {type(root).__name__}: {first}; {fix}") from None


def rename_columns(ds, renames: Mapping[str, str] | None):
    if not renames:
        return ds
    present = {k: v for k, v in renames.items() if k in ds.column_names and k != v}
    return ds.rename_columns(present) if present else ds


def check_loaded_columns(ds, needed: Iterable[str], where: str) -> None:
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise ConfigError(f"{where} has no column {', '.join(repr(c) for c in missing)}; its columns: {', '.join(ds.column_names)}")
    if len(ds) == 0:
        raise ConfigError(f"{where} is empty (no rows)")


def carve(n: int, fractions: Mapping[str, float], seed: int) -> dict[str, list[int]]:
    """Split range(n) by a seeded permutation: each named split gets round(frac * n) rows (at
    least one if its fraction is > 0), "train" keeps the rest, in the original order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out: dict[str, list[int]] = {}
    pos = 0
    for name, frac in fractions.items():
        if frac <= 0:
            continue
        k = max(1, round(frac * n))
        out[name] = sorted(order[pos : pos + k])
        pos += k
    if pos >= n:
        raise ConfigError(f"carving {', '.join(out)} off {n} training rows leaves none to train on; lower the split percentages")
    out["train"] = sorted(order[pos:])
    return out


def subset(ds, n: int | None, seed: int):
    """A seeded random subset of n rows (all rows when n is None or >= len)."""
    if n is None or n >= len(ds):
        return ds
    idx = list(range(len(ds)))
    random.Random(seed).shuffle(idx)
    return ds.select(sorted(idx[:n]))


def eval_cap(cfg: Mapping[str, Any], cpu_default: int) -> int | None:
    """task.max_eval_samples; `auto` = `cpu_default` rows without a visible CUDA device, else all."""
    v = cfg.get("max_eval_samples")
    if v == "auto":
        import torch

        return None if torch.cuda.is_available() else cpu_default
    return v


# -- labels ------------------------------------------------------------------------------------

def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _label_key(x: Any) -> Any:
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def label_vocabulary(train_labels: Sequence[Any], label_names: Sequence[Any] | None) -> list[str]:
    """Label names in id order: given ones, or the sorted distinct training labels (numbers
    sorted as numbers, anything else as strings)."""
    if label_names:
        return [str(x) for x in label_names]
    seen = {_label_key(x) for x in train_labels}
    if all(_is_number(x) for x in seen):
        return [str(x) for x in sorted(seen)]
    return sorted(str(x) for x in seen)


def encode_labels(labels: Sequence[Any], names: list[str], where: str, given_names: bool) -> list[int]:
    """Map raw labels to ids. A name maps to its position; with `given_names` an integer label
    in range is taken as the id itself (datasets' ClassLabel, GLUE's 0/1)."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for row, x in enumerate(labels):
        if x is None or (isinstance(x, str) and not x.strip()):
            raise ConfigError(f"{where}: row {row} has no label")
        key = str(_label_key(x)).strip() if isinstance(x, (str, int, float)) else str(x)
        if key in index:
            out.append(index[key])
            continue
        if given_names:
            try:
                i = int(key)
            except ValueError:
                i = -1
            if 0 <= i < len(names) and str(i) == key:
                out.append(i)
                continue
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise ConfigError(f"{where}: label {x!r} (row {row}) never appears in the training labels ({shown}); "
                          f"fix the label, or give it training examples")
    return out


# -- classification splits -> RawClassification -------------------------------------------------

def text_columns(cfg: Mapping[str, Any]) -> list[str]:
    cols = cfg.get("text_columns") or ["text"]
    if isinstance(cols, str):
        cols = [cols]
    cols = [str(c) for c in cols]
    if not 1 <= len(cols) <= 2:
        raise ConfigError(f"task.text_columns takes one or two columns (a sentence or a sentence pair), got {cols}")
    return cols


def raw_classification(splits: Mapping[str, Any], cfg: Mapping[str, Any], where: Mapping[str, str]):
    """Datasets per split (train, validation?, test) -> RawClassification with label ids."""
    from peftbench.experiments.data.base import RawClassification

    cols, label_col = text_columns(cfg), str(cfg.get("label_column") or "label")
    for name, ds in splits.items():
        check_loaded_columns(ds, [*cols, label_col], where[name])
    given = cfg.get("label_names")
    names = label_vocabulary(splits["train"][label_col], given)
    if len(names) < 2:
        raise ConfigError(f"{where['train']}: column {label_col!r} has a single label {names}; classification needs at least two")
    out = {}
    for name, ds in splits.items():
        ids = encode_labels(ds[label_col], names, where[name], given_names=bool(given))
        texts = list(zip(*[["" if t is None else str(t) for t in ds[c]] for c in cols]))
        out[name] = (texts, ids)
    return RawClassification(label_names=names, splits=out)  # metrics: the task YAML's, set by build_task


def finish_splits(splits: dict[str, Any], cfg: Mapping[str, Any], cpu_eval_default: int | None = None) -> dict[str, Any]:
    """Apply max_train_samples / max_eval_samples (seeded subsets, after carving)."""
    seed = int(cfg.get("split_seed", 42))
    cap = eval_cap(cfg, cpu_eval_default) if cpu_eval_default else cfg.get("max_eval_samples")
    cap = None if cap == "auto" else cap
    out = {}
    for name, ds in splits.items():
        n = cfg.get("max_train_samples") if name == "train" else cap
        out[name] = subset(ds, n, seed)
    return out


def carve_splits(train, have: Iterable[str], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Carve the splits not in `have` off `train`: test by task.test_split_percentage, validation
    by task.validation_split_percentage (seeded by task.split_seed)."""
    fractions = {}
    for name in ("test", "validation"):
        if name not in have:
            fractions[name] = percentage(cfg, f"{name}_split_percentage") / 100
    parts = carve(len(train), fractions, int(cfg.get("split_seed", 42)))
    return {name: train.select(idx) for name, idx in parts.items()}
