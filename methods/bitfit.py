"""BitFit (Ben Zaken et al. 2022): train the existing biases (and the task head), nothing else.

peft has no BitFit (its BEFT adds new bias vectors instead), so this is a small method of its own.
A model without biases (Llama) is refused in the YAML's `unsupported` list, and again here in case
a user model has none.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from peftbench.methods.base import Method, ModelInfo, save_trainable, unfreeze_heads
from peftbench.methods.registry import register


@register("bitfit")
class BitFit(Method):
    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        model.requires_grad_(False)
        biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
        if not biases:
            raise ValueError(f"model {info.name} has no bias parameters: BitFit would train only the head")
        for p in biases:
            p.requires_grad_(True)
        unfreeze_heads(model, info)
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        save_trainable(model, path, "bitfit.safetensors")
