"""GLUE classification (SST-2, RTE, MRPC, ...): conf/task/sst2.yaml, rte.yaml, mrpc.yaml.

Splits. GLUE's test labels are hidden (-1 on the hub), so, as is usual in PEFT papers, GLUE's
validation split is this task's *test* split, and this task's *validation* split is carved off
GLUE's train split with a seeded permutation (task.validation_split_percentage, task.split_seed):
model selection never sees the reported examples.

Sources.
  * hub (default): `load_dataset("nyu-mll/glue", <config>)`; labels are the hub's ClassLabel ids.
  * local GLUE TSV files as distributed: `task.data_files.train=train.tsv
    task.data_files.validation=dev.tsv` (GLUE's names: dev.tsv is the hub's validation split),
    read by `load_dataset("csv", delimiter="\\t", quoting=3)`. `task.file_columns` renames the
    distributed headers to the hub's column names (MRPC: "#1 String" -> sentence1, ...); string
    labels (RTE's entailment/not_entailment) map to the hub's ids through task.label_names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from peftbench.experiments.data import files
from peftbench.experiments.data.base import RawClassification, task_builder, task_validator
from peftbench.methods.base import ConfigError

QUOTE_NONE = 3  # csv.QUOTE_NONE: GLUE TSVs carry bare quotes inside sentences


def _data_files(cfg: Mapping[str, Any]) -> dict[str, Path]:
    given = {k: v for k, v in (cfg.get("data_files") or {}).items() if v}
    if "test" in given:
        raise ConfigError("GLUE test labels are hidden; pass task.data_files.train=train.tsv and task.data_files.validation=dev.tsv "
                          "(dev.tsv is reported as this task's test split)")
    unknown = sorted(set(given) - {"train", "validation"})
    if unknown:
        raise ConfigError(f"task.data_files takes train and validation (GLUE's dev.tsv), got {unknown}")
    if given and "train" not in given:
        raise ConfigError("task.data_files.validation is set but task.data_files.train is not; pass both GLUE files")
    if given and "validation" not in given:
        raise ConfigError("task.data_files.train is set but task.data_files.validation (GLUE's dev.tsv, the test split here) is not")
    return {k: files.check_file(v, f"task.data_files.{k}") for k, v in given.items()}


@task_validator("glue")
def validate(cfg: Mapping[str, Any]) -> None:
    for key in ("max_train_samples", "max_eval_samples"):
        files.optional_count(cfg, key)
    files.percentage(cfg, "validation_split_percentage")
    cols = files.text_columns(cfg)
    needed = [*cols, str(cfg.get("label_column") or "label")]
    local = _data_files(cfg)
    if not local:
        if not cfg.get("dataset"):
            raise ConfigError("task.dataset (hub path and config) or task.data_files.train/validation is required")
        files.hub_check(cfg["dataset"])
    for split, path in local.items():
        header = files.header_columns(path, "csv", "\t")
        files.require_columns(header, needed, f"task.data_files.{split} ({path})", cfg.get("file_columns"))


@task_builder("glue")
def glue(cfg: Mapping[str, Any]) -> RawClassification:
    local = _data_files(cfg)
    if local:
        ds = files.load_files(local, "csv", delimiter="\t", quoting=QUOTE_NONE)
        ds = {k: files.rename_columns(v, cfg.get("file_columns")) for k, v in ds.items()}
        where = {"train": f"task.data_files.train ({local['train']})", "test": f"task.data_files.validation ({local['validation']})"}
    else:
        ds = files.load_hub(cfg["dataset"])
        name = f"{cfg['dataset']['path']}/{cfg['dataset'].get('name')}"
        where = {"train": f"{name} train", "test": f"{name} validation"}
    where["validation"] = where["train"] + f" (carved {cfg.get('validation_split_percentage')}%)"
    train = ds["train"]
    files.check_loaded_columns(train, [*files.text_columns(cfg), str(cfg.get("label_column") or "label")], where["train"])
    splits = files.carve_splits(train, ("test",), cfg)
    splits["test"] = ds["validation"]
    splits = files.finish_splits(splits, cfg)
    return files.raw_classification(splits, cfg, where)
