"""Type and range of every config key a user can set, checked before anything loads.

One declarative table: dotted key -> rule. A rule is a predicate and the words that say what it
accepts; `check` raises one ConfigError naming the first key that breaks its rule. Keys that are
absent are not checked (a method or task has only its own keys); keys the table does not know
(a new method's own knobs) are left to that method's `validate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from peftbench.methods.base import ConfigError, positive_int


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    accepts: str  # "a positive integer", completes "<key> must be ..."
    example: str = ""  # a value that works, for the fix in the message


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.accepts}", rule.example)


def _eg(rule: Rule, example: str) -> Rule:
    return Rule(rule.ok, rule.accepts, example)


def _one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(choices), choices[0])


POS_INT = Rule(positive_int, "a positive integer", "8")
NONNEG_INT = Rule(lambda v: _int(v) and v >= 0, "an integer >= 0", "0")
INT = Rule(_int, "an integer", "0")
POS_NUM = Rule(lambda v: _num(v) and v > 0, "a number > 0", "1e-3")
NONNEG_NUM = Rule(lambda v: _num(v) and v >= 0, "a number >= 0", "0.0")
FRACTION = Rule(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)", "0.1")
PERCENT = Rule(lambda v: _num(v) and 0 <= v < 100, "a number in [0, 100)", "10")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false", "true")
STR = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string", "NAME")
STR_OR_LIST = Rule(lambda v: (isinstance(v, str) and v != "") or (_str_list(v) and len(v) > 0), "a name or a list of names", "[NAME]")
STR_LIST = Rule(_str_list, "a list of strings", "[]")
MAPPING = Rule(lambda v: isinstance(v, Mapping), "a group of keys (not a single value)", "")
# a source block, or the name of one of the model's `sources` (model.source=hub)
SOURCE = Rule(lambda v: isinstance(v, Mapping) or (isinstance(v, str) and v.strip() != ""), "a group of keys or the name of one of model.sources", "hub")
POS_NUM_LIST = Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(_num(x) and x > 0 for x in v), "a list of numbers > 0", "[1e-4,1e-3]")
THREADS = Rule(lambda v: v == "auto" or positive_int(v), "auto or a positive integer", "auto")
AUTO_COUNT = Rule(lambda v: v is None or v == "auto" or positive_int(v), "null, auto or a positive integer", "auto")

RULES: dict[str, Rule] = {
    # top level
    "steps": _eg(POS_INT, "200"), "batch_size": _eg(POS_INT, "16"), "eval_batch_size": _eg(POS_INT, "64"),
    "max_length": _eg(POS_INT, "128"),
    "lr": _optional(POS_NUM), "weight_decay": NONNEG_NUM, "warmup_ratio": FRACTION, "grad_clip": NONNEG_NUM,
    "seed": NONNEG_INT, "precision": _one_of("auto", "fp32", "bf16"), "precision_requested": _one_of("auto", "fp32", "bf16"), "device": STR, "torch_threads": THREADS,
    "gradient_checkpointing": BOOL, "compile": BOOL, "checkpoint_every_steps": NONNEG_INT, "results_dir": STR, "force": BOOL, "progress": BOOL, "reuse_measurements": BOOL,
    "method": MAPPING, "model": MAPPING, "task": MAPPING, "measure": MAPPING, "lm_eval": MAPPING,
    # model.*
    "model.name": STR, "model.kind": _one_of("classifier", "causal_lm"), "model.source": SOURCE, "model.sources": _optional(MAPPING),
    "model.dtype": _one_of("fp32", "bf16", "fp16"), "model.head_modules": STR_LIST, "model.derive_from_checkpoint": BOOL,
    "model.target_presets": MAPPING, "model.adapter_sites": MAPPING, "model.default_steps": _optional(POS_INT),
    # measure.*
    "measure.warmup_steps": NONNEG_INT, "measure.latency": BOOL, "measure.latency_batch": POS_INT,
    "measure.latency_length": POS_INT, "measure.latency_warmup": NONNEG_INT, "measure.latency_repeats": _eg(POS_INT, "30"),
    "measure.latency_keep_base": BOOL, "measure.adapter_size": BOOL, "measure.metrics_before": BOOL,
    "measure.serving": MAPPING, "measure.serving.enabled": BOOL, "measure.serving.warmup": NONNEG_INT,
    "measure.serving.repeats": _eg(POS_INT, "10"), "measure.serving.batch": _eg(POS_INT, "8"),
    "measure.serving.adapters": Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(positive_int(x) for x in v),
                                     "a non-empty list of positive integers", "[1,2,4,8]"),
    "measure.serving.load_repeats": _eg(POS_INT, "3"), "measure.serving.swap_repeats": _eg(POS_INT, "20"),
    "measure.serving.merge_precision": BOOL, "measure.serving.merge_eval": BOOL,
    "measure.serving.generation_tokens": _eg(Rule(lambda v: positive_int(v) and v >= 2, "an integer >= 2", "16"), "16"),
    "measure.serving.generation_repeats": _eg(POS_INT, "3"),
    # lm_eval.*
    "lm_eval.tasks": STR_LIST, "lm_eval.include_path": _optional(STR), "lm_eval.limit": _optional(POS_NUM),
    "lm_eval.num_fewshot": _optional(NONNEG_INT), "lm_eval.batch_size": POS_INT,
    # method.* (every method's keys; each method also checks how they combine with the model)
    "method.name": STR, "method.impl": STR, "method.lr": _optional(POS_NUM), "method.r": POS_INT,
    "method.alpha": _eg(POS_NUM, "16"), "method.dropout": FRACTION, "method.target_modules": _optional(STR_OR_LIST),
    "method.reduction_factor": _eg(POS_INT, "16"), "method.bottleneck_size": _optional(POS_INT), "method.non_linearity": STR,
    "method.quant_type": _one_of("nf4", "fp4"), "method.double_quant": BOOL,
    "method.loraplus_lr_ratio": Rule(lambda v: _num(v) and v >= 1, "a number >= 1 (B's lr over A's)", "16"),
    "method.peft_class": STR, "method.peft_kwargs": MAPPING, "method.report": _optional(MAPPING),
    "method.can_merge": BOOL, "method.unsupported": _optional(Rule(lambda v: isinstance(v, list) and all(isinstance(x, Mapping) for x in v), "a list of {model_type: ..., reason: ...}", "")), "method.resolve_kwargs": _optional(MAPPING),
    "method.calibration_batches": _eg(POS_INT, "4"), "method.use_dora": BOOL,
    "method.hot_swap": BOOL, "method.mixed_batch": BOOL,
    # task.* (every task's keys; the task's validator then checks files and columns)
    "task.name": STR, "task.builder": STR, "task.kind": _one_of("classification", "generation"),
    "task.data_seed": INT, "task.n_train": _eg(POS_INT, "4000"), "task.n_validation": NONNEG_INT, "task.n_test": _eg(POS_INT, "1000"),
    "task.label_noise": FRACTION, "task.split_seed": INT,
    "task.validation_split_percentage": PERCENT, "task.test_split_percentage": PERCENT,
    "task.max_train_samples": _optional(POS_INT), "task.max_eval_samples": AUTO_COUNT,
    "task.max_new_tokens": _eg(POS_INT, "256"), "task.stop": STR_LIST,
    "task.train_file": _optional(STR), "task.validation_file": _optional(STR), "task.test_file": _optional(STR),
    "task.text_columns": STR_OR_LIST, "task.label_column": STR, "task.label_names": _optional(Rule(lambda v: isinstance(v, list) and len(v) >= 2, "a list of two or more names", "[neg,pos]")),
    "task.delimiter": _optional(STR), "task.quoting": _optional(Rule(lambda v: _int(v) and 0 <= v <= 3, "0, 1, 2 or 3 (csv.QUOTE_*)", "3")),
    "task.dataset": MAPPING, "task.data_files": MAPPING, "task.file_columns": MAPPING,
    "task.data_files.train": _optional(STR), "task.data_files.validation": _optional(STR), "task.data_files.test": _optional(STR),
    # logger.*
    "logger": MAPPING, "logger.name": STR, "logger.project": _optional(STR), "logger.entity": _optional(STR),
    "logger.mode": _one_of("offline", "online", "disabled"), "logger.tags": STR_LIST, "logger.group": _optional(STR),
    "logger.dir": _optional(STR),
    # lr_search.*
    "lr_search": MAPPING, "lr_search.grid": _optional(POS_NUM_LIST), "lr_search.factors": POS_NUM_LIST,
    "lr_search.split": _one_of("validation", "train"), "lr_search.metric": _optional(STR), "lr_search.mode": _optional(_one_of("max", "min")),
    # distributed.* (conf/distributed/*.yaml; experiments/distributed.validate checks how they combine)
    "distributed": MAPPING, "distributed.strategy": _one_of("none", "ddp", "fsdp"), "distributed.nproc_per_node": _eg(POS_INT, "2"),
    "distributed.nnodes": _eg(POS_INT, "1"), "distributed.backend": _one_of("auto", "nccl", "gloo"), "distributed.timeout_s": _eg(POS_INT, "1800"),
    "distributed.find_unused_parameters": BOOL, "distributed.sharding": _one_of("full_shard", "shard_grad_op"),
    "distributed.param_dtype": _optional(_one_of("fp32", "bf16")), "distributed.reduce_dtype": _optional(_one_of("fp32", "bf16")),
    # forgetting.*
    "forgetting": MAPPING, "forgetting.enabled": BOOL, "forgetting.data_files": _optional(STR),
    "forgetting.texts": _eg(POS_INT, "32"), "forgetting.tokens": _eg(POS_INT, "64"), "forgetting.batch_size": _eg(POS_INT, "8"),
}


def _present(config: Mapping[str, Any], dotted: str) -> Iterator[Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return
        node = node[part]
    yield node


def check(config: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first key whose value breaks its rule (table order: top-level
    keys first, so a mapping replaced by a scalar is named before its children)."""
    for key, rule in RULES.items():
        for value in _present(config, key):
            if not rule.ok(value):
                fix = f"; e.g. {key}={rule.example}" if rule.example else ""
                raise ConfigError(f"{key} must be {rule.accepts}, got {value!r}{fix}")
