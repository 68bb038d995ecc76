"""Task registry and the classification task shared by every classification builder."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch

from peftbench.experiments import metric_spec
from peftbench.methods.base import ConfigError

_BUILDERS: dict[str, Callable[..., Any]] = {}
_VALIDATORS: dict[str, Callable[..., None]] = {}
_METRICS: dict[str, tuple[str, ...]] = {}
_discovered = False
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "f1", "mcc")


def task_builder(name: str, metrics: tuple[str, ...] = CLASSIFICATION_METRICS):
    """Register a builder and the metric names its task can compute (a task YAML declares which
    of them it reports)."""

    def deco(fn):
        _BUILDERS[name] = fn
        _METRICS[name] = tuple(metrics)
        return fn

    return deco


def task_validator(name: str):
    """Register a cheap check of a builder's task config (files exist, columns present, knobs in
    range) that `validate_task` runs before any model is loaded. It raises ConfigError."""

    def deco(fn):
        _VALIDATORS[name] = fn
        return fn

    return deco


def task_builders() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def _discover() -> None:
    global _discovered
    if not _discovered:
        # every sibling module, found on disk: a builder is one new file here and nothing else
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if info.name != "base":
                importlib.import_module(f"{__package__}.{info.name}")
        _discovered = True


@dataclass
class RawClassification:
    """Text examples per split. Each example is a tuple of one or two texts."""

    label_names: list[str]
    splits: dict[str, tuple[list[tuple[str, ...]], list[int]]]
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "macro_f1"])


class Task(Protocol):
    kind: str
    num_labels: int | None

    def train_batches(self, steps: int, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]: ...

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int, device: torch.device, autocast) -> dict[str, float]: ...

    def fixed_batch(self, batch: int, length: int) -> dict[str, torch.Tensor]: ...


def _macro_f1(pred: torch.Tensor, gold: torch.Tensor, n: int) -> float:
    """Macro F1 over the classes that occur in the gold labels or the predictions (a class
    absent from both has no F1 to average)."""
    from sklearn.metrics import f1_score

    g, p = gold.tolist(), pred.tolist()
    present = sorted(set(g) | set(p))
    return float(f1_score(g, p, labels=present, average="macro", zero_division=0)) if present else 0.0


def score_labels(pred: torch.Tensor, gold: torch.Tensor, names: list[str], num_labels: int) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    compute = {
        "accuracy": lambda: (pred == gold).float().mean().item(),
        "macro_f1": lambda: _macro_f1(pred, gold, num_labels),
        "f1": lambda: _binary_f1(pred, gold),
        "mcc": lambda: float(matthews_corrcoef(gold.numpy(), pred.numpy())),
    }
    return {name: compute[name]() for name in names}


def majority_metrics(labels: Mapping[str, list[int]], names: list[str], num_labels: int) -> dict[str, dict[str, float]]:
    """Per held-out split, the declared metrics of the constant predictor of the training split's
    most frequent label (ties: the smaller label)."""
    train = torch.tensor(labels["train"], dtype=torch.long)
    top = int(torch.bincount(train, minlength=num_labels).argmax()) if len(train) else 0
    out = {}
    for split, ys in labels.items():
        if split != "train" and ys:
            gold = torch.tensor(ys, dtype=torch.long)
            out[split] = score_labels(torch.full_like(gold, top), gold, names, num_labels)
    return out


def tensors_digest(data: Mapping[str, torch.Tensor]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(data):
        h.update(k.encode() + data[k].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _binary_f1(pred: torch.Tensor, gold: torch.Tensor) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC."""
    from sklearn.metrics import f1_score

    return float(f1_score(gold.tolist(), pred.tolist(), pos_label=1, average="binary", zero_division=0))


class ClassificationTask:
    kind = "classification"
    outcome_metric = "accuracy"  # the metric that is the mean of the per-item outcomes (correct or not)

    def __init__(self, raw: RawClassification, tokenizer, max_length: int):
        self.label_names = raw.label_names
        self.num_labels = len(raw.label_names)
        self.metric_names = raw.metrics
        if "f1" in self.metric_names and self.num_labels != 2:
            raise ConfigError(f"metric f1 is the positive class's F1 of a two-label task; this task has {self.num_labels} labels: use macro_f1")
        self.pad_token_id = tokenizer.pad_token_id
        self.outcomes: dict[str, list[bool]] = {}
        self.splits = {name: self._encode(tokenizer, texts, labels, max_length) for name, (texts, labels) in raw.splits.items()}
        for name in ("train", "test"):
            if name not in self.splits or len(self.splits[name]["labels"]) == 0:
                raise ConfigError(f"task has no {name} examples; check the task's data files")

    @staticmethod
    def _encode(tokenizer, texts: list[tuple[str, ...]], labels: list[int], max_length: int) -> dict[str, torch.Tensor]:
        columns = list(zip(*texts)) if texts else [[]]
        enc = tokenizer(*[list(c) for c in columns], padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels, dtype=torch.long)}
        if "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    def size(self, split: str) -> int:
        return len(self.splits[split]["labels"]) if split in self.splits else 0

    def train_batches(self, steps: int, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        data = self.splits["train"]
        n = len(data["labels"])
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=gen)
        pos = 0
        for _ in range(steps):
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            yield {k: v[idx] for k, v in data.items()}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, split: str, batch_size: int, device: torch.device, autocast) -> torch.Tensor:
        """Predicted labels in the split's order. Examples are batched by length and each batch is
        cut after the last column any of its rows uses (with left padding nothing is cut). Those
        columns are masked out of attention, so the logits are the padded batch's up to float
        rounding (5e-8 at most on MiniLM, the same labels), at half the cost on short texts."""
        data = self.splits[split]
        n = len(data["labels"])
        order = torch.argsort(data["attention_mask"].sum(1), descending=True, stable=True)
        preds = torch.empty(n, dtype=torch.long)
        was_training = model.training
        model.eval()
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            used = data["attention_mask"][idx].any(0).nonzero()
            width = int(used.max()) + 1 if len(used) else data["attention_mask"].shape[1]  # last column any row uses
            batch = {k: v[idx, :width].to(device) for k, v in data.items() if k != "labels"}
            with autocast():
                preds[idx] = model(**batch).logits.argmax(-1).cpu()
        model.train(was_training)
        return preds

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int, device: torch.device, autocast) -> dict[str, float]:
        """The declared metrics on `split`; each item's correctness is kept in `outcomes[split]`
        (the latest evaluation's), for the record's per-item outcomes."""
        gold = self.splits[split]["labels"]
        pred = self.predict(model, split, batch_size, device, autocast)
        self.outcomes[split] = (pred == gold).tolist()
        return score_labels(pred, gold, self.metric_names, self.num_labels)

    def majority_metrics(self) -> dict[str, dict[str, float]]:
        """The scores of always predicting the training split's most frequent label: the floor a
        run must beat to have learned anything."""
        return majority_metrics({k: v["labels"].tolist() for k, v in self.splits.items()}, self.metric_names, self.num_labels)

    def item_digest(self, split: str) -> str:
        """A hash of the split's inputs and labels: two records' outcomes pair item by item only
        when it is the same."""
        return tensors_digest(self.splits[split])

    def fixed_batch(self, batch: int, length: int) -> dict[str, torch.Tensor]:
        """A fixed inference batch for latency: the first test examples, cut to `length` tokens."""
        data = self.splits["test"]
        idx = torch.arange(batch) % len(data["labels"])
        return {k: v[idx][:, :length] for k, v in data.items() if k != "labels"}


def validate_task(task_cfg: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> None:
    """Check a task config cheaply, before any model is loaded (called from run.prepare).

    Unknown builder, missing or empty data files, missing columns, bad subset knobs; with the
    whole run `config`, also that a generation task (or lm-eval) gets a causal LM.
    """
    _discover()
    builder = task_cfg.get("builder")
    if builder not in _BUILDERS:
        raise ConfigError(f"unknown task builder {builder!r}; available: {', '.join(sorted(_BUILDERS))}")
    kind = task_cfg.get("kind", "classification")
    if kind not in ("classification", "generation"):
        raise ConfigError(f"task.kind must be classification or generation, got {kind!r}")
    model = (config or {}).get("model") or {}
    if config is not None and kind == "generation" and model.get("kind") != "causal_lm":
        raise ConfigError(
            f"task {task_cfg.get('name')} is generative and needs a causal LM; model {model.get('name')} is a "
            f"{model.get('kind')} (use e.g. model=tiny-llama or a conf/model/ LLM)"
        )
    declared_metrics(task_cfg)
    if builder in _VALIDATORS:
        _VALIDATORS[builder](task_cfg)
    if config is None:
        return
    if ((config.get("lm_eval") or {}).get("tasks")):
        from peftbench.experiments.lm_eval_hook import validate_lm_eval

        validate_lm_eval(config)


def declared_metrics(task_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The task's metric declaration (experiments.metric_spec), checked against what its builder
    computes."""
    where = metric_spec.where_of(task_cfg)
    out = metric_spec.parse(task_cfg.get("metrics"), where)
    _discover()
    known = _METRICS.get(str(task_cfg.get("builder")))
    unknown = [m["name"] for m in out if known is not None and m["name"] not in known]
    if unknown:
        raise ConfigError(f"{where}: builder {task_cfg.get('builder')} does not compute {unknown}; it computes {list(known)}")
    return metric_spec.check_primary(out, where)


def metric_names(task_cfg: Mapping[str, Any]) -> list[str]:
    return [m["name"] for m in declared_metrics(task_cfg)]


def build_task(task_cfg: Mapping[str, Any], tokenizer, max_length: int) -> Task:
    _discover()
    builder = task_cfg.get("builder")
    if builder not in _BUILDERS:
        raise ConfigError(f"unknown task builder {builder!r}; available: {', '.join(sorted(_BUILDERS))}")
    raw = _BUILDERS[builder](task_cfg)
    raw.metrics = metric_names(task_cfg)
    if isinstance(raw, RawClassification):
        return ClassificationTask(raw, tokenizer, max_length)
    return raw.build(tokenizer, max_length)  # generation tasks carry their own task class


# Builders whose data is generated in milliseconds from the task config alone: an analysis of a
# record that predates `metrics_majority` may regenerate the labels to compute that floor.
GENERATED = ("synthetic_sentiment",)


def generated_majority(task_cfg: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """`majority_metrics` of a generated classification task from its config alone; None for a
    task that needs its data files (or is not classification)."""
    import json

    return _generated_majority(json.dumps(dict(task_cfg), sort_keys=True, default=str))


@lru_cache(maxsize=32)
def _generated_majority(task_json: str) -> dict[str, dict[str, float]] | None:
    import json

    cfg = json.loads(task_json)
    if cfg.get("builder") not in GENERATED or cfg.get("kind", "classification") != "classification":
        return None
    _discover()
    try:
        raw = _BUILDERS[cfg["builder"]](cfg)
        names = [m["name"] for m in declared_metrics(cfg)]
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
    return majority_metrics({k: list(v[1]) for k, v in raw.splits.items()}, names, len(raw.label_names))
