"""Linear probe: frozen model, trained task head. The lower reference."""
from pathlib import Path

import torch
from torch import nn

from peftbench.methods.base import ConfigError, Method, ModelInfo, save_trainable, unfreeze_heads
from peftbench.methods.registry import register


@register("linear_probe")
class LinearProbe(Method):
    def validate(self, info: ModelInfo) -> None:
        if not info.head_modules:
            raise ConfigError(
                f"method linear_probe trains a fresh task head only; model {info.name} on a generation task has none "
                "(its LM head is pretrained, so nothing would train): use a classification task or another method")

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        model.requires_grad_(False)
        unfreeze_heads(model, info)
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        save_trainable(model, path, "head.safetensors")
