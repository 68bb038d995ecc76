"""What the measuring code needs to know about a model's layers."""
from __future__ import annotations

from torch import nn


def is_shadow_copy(name: str) -> bool:
    """peft's `modules_to_save` keeps the untrained head beside the trained copy it runs; the
    shadow never computes, so it is not counted as parameters or FLOPs."""
    return ".original_module." in f".{name}."


def linear_dims(model: nn.Module) -> list[tuple[str, int, bool]]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not is_shadow_copy(name):
            out.append((name, m.in_features * m.out_features, m.weight.requires_grad))
    return out



def is_4bit(model: nn.Module, name: str) -> bool:
    return type(model.get_submodule(name)).__name__ == "Linear4bit"


def base_config(model: nn.Module):
    return model.config if hasattr(model, "config") else model.base_model.model.config


def in_body(name: str) -> bool:
    return not any(k in name for k in ("classifier", "score", "modules_to_save"))
