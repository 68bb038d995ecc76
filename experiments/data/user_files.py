"""A user's own classification data: task=csv and task=jsonl (conf/task/csv.yaml, jsonl.yaml).

Files (run_glue.py's names): task.train_file, optional task.validation_file and task.test_file.
A split without a file is carved off the training file with a seeded permutation:
task.test_split_percentage, then task.validation_split_percentage (task.split_seed).
Columns: task.text_columns (one, or two for sentence pairs; default [text]), task.label_column
(default label). Labels of any type map to ids in sorted order (numbers as numbers, else as
strings), or in the order of task.label_names when given. A validation/test label that never
appears in training is an error, not a silent new class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from peftbench.experiments.data import files
from peftbench.experiments.data.base import RawClassification, task_builder, task_validator
from peftbench.methods.base import ConfigError

FILE_KEYS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}


def _files(cfg: Mapping[str, Any]) -> dict[str, Path]:
    if not cfg.get("train_file"):
        raise ConfigError(f"task.train_file is required for task {cfg.get('name')}; e.g. task.train_file=data/train.{cfg.get('builder')}")
    return {split: files.check_file(cfg[key], f"task.{key}") for split, key in FILE_KEYS.items() if cfg.get(key)}


def _read_kwargs(fmt: str, path: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    if fmt != "csv":
        return {}
    kw: dict[str, Any] = {"delimiter": files.delimiter_for(path, cfg.get("delimiter"))}
    if cfg.get("quoting") is not None:
        kw["quoting"] = int(cfg["quoting"])
    return kw


def _validate(cfg: Mapping[str, Any], default_fmt: str) -> None:
    for key in ("max_train_samples", "max_eval_samples"):
        files.optional_count(cfg, key)
    given = _files(cfg)
    if "test" not in given:
        files.percentage(cfg, "test_split_percentage")
        if not files.percentage(cfg, "test_split_percentage"):
            raise ConfigError("no test split: set task.test_file=PATH or task.test_split_percentage>0")
    if "validation" not in given:
        files.percentage(cfg, "validation_split_percentage")
    needed = [*files.text_columns(cfg), str(cfg.get("label_column") or "label")]
    for split, path in given.items():
        fmt = files.file_format(path, default_fmt)
        kw = _read_kwargs(fmt, path, cfg)
        header = files.header_columns(path, fmt, kw.get("delimiter", ","))
        if fmt == "csv":
            files.check_csv_rows(path, kw["delimiter"], kw.get("quoting"))
        files.require_columns(header, needed, f"task.{FILE_KEYS[split]} ({path})",
                              hint="; name yours with task.text_columns=[...] and task.label_column=...")


def _build(cfg: Mapping[str, Any], default_fmt: str) -> RawClassification:
    given = _files(cfg)
    loaded = {}
    for split, path in given.items():  # one load per file: splits may differ in format
        fmt = files.file_format(path, default_fmt)
        loaded[split] = files.load_files({split: path}, fmt, **_read_kwargs(fmt, path, cfg))[split]
    where = {split: f"task.{FILE_KEYS[split]} ({path})" for split, path in given.items()}
    needed = [*files.text_columns(cfg), str(cfg.get("label_column") or "label")]
    files.check_loaded_columns(loaded["train"], needed, where["train"])
    splits = files.carve_splits(loaded["train"], given, cfg)
    for split in ("validation", "test"):
        if split in given:
            splits[split] = loaded[split]
        elif split in splits:
            where[split] = f"{where['train']} (carved {cfg.get(split + '_split_percentage')}%)"
    splits = files.finish_splits(splits, cfg)
    return files.raw_classification(splits, cfg, where)


@task_validator("csv")
def validate_csv(cfg: Mapping[str, Any]) -> None:
    _validate(cfg, "csv")


@task_builder("csv")
def csv_task(cfg: Mapping[str, Any]) -> RawClassification:
    return _build(cfg, "csv")


@task_validator("jsonl")
def validate_jsonl(cfg: Mapping[str, Any]) -> None:
    _validate(cfg, "json")


@task_builder("jsonl")
def jsonl_task(cfg: Mapping[str, Any]) -> RawClassification:
    return _build(cfg, "json")
