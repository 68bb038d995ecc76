"""Build, train two steps and merge one zoo method in-process on a small model (shared by
tests/test_zoo.py and the quick probe of every YAML)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from peftbench.experiments.meters import StepTimer
from peftbench.experiments.models import build_model_info, load_model
from peftbench.experiments.run import method_for
from peftbench.experiments.train import train

VOCAB = (1000, 5000)  # token ids valid for MiniLM; the tiny Llama's vocab is smaller (taken mod)


def batches(kind: str, vocab: int, n_labels: int, seed: int = 0, size: int = 4, length: int = 12):
    """A source of `n` fixed random batches, like Task.train_batches(n) (CPU tensors)."""
    def source(n: int):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            ids = torch.randint(VOCAB[0], VOCAB[1], (size, length), generator=g) % vocab
            b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            b["labels"] = torch.randint(0, n_labels, (size,), generator=g) if kind == "classification" else ids.clone()
            yield b
    return source


def build(overrides: list[str], task_kind: str) -> tuple[Any, Any, nn.Module, Any]:
    """(method, info, wrapped model, batch source): validated, loaded, prepared with data, wrapped."""
    from tests.conftest import compose

    cfg = compose(overrides)
    labels = 3 if task_kind == "classification" else None
    info = build_model_info(cfg["model"], task_kind, labels)
    method = method_for(cfg["method"])
    method.validate(info)
    torch.manual_seed(0)
    compute = torch.bfloat16 if cfg["method"]["name"] == "lora_bf16w" else torch.float32
    extra = {**method.load_kwargs(compute, info), **_no_dropout(cfg["model"])}
    model = load_model(cfg["model"], task_kind, labels, torch.device("cpu"), extra, 0)
    method.after_load(model)
    source = batches(task_kind, model.config.vocab_size, labels or 1)
    method.prepare_with_data(model, info, source)
    return method, info, method.wrap(model, info), source


def _no_dropout(model_cfg) -> dict:
    if model_cfg["name"] == "minilm":
        return {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}
    return {}


def train_steps(method, model: nn.Module, source, steps: int = 2, lr: float | None = None) -> list[float]:
    opt = method.optimizer(model, lr or float(method.cfg["lr"]), 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return train(model, opt, sched, source(steps), torch.device("cpu"), nullcontext, 1.0, StepTimer(torch.device("cpu")),
                 lambda *a: None, method.on_step)


@torch.no_grad()
def logits(model: nn.Module, source) -> torch.Tensor:
    model.eval()
    b = next(iter(source(1)))
    return model(**{k: v for k, v in b.items() if k != "labels"}).logits.float()


def trained_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
