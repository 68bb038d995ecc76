"""QLoRA (Dettmers et al. 2023): LoRA over a base model quantised to 4-bit NF4 at load time."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BitsAndBytesConfig

from peftbench.methods.base import ConfigError, ModelInfo
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


def disable_cpu_packed_4bit(model: nn.Module) -> int:
    """Keep every Linear4bit on the kernel that has a backward.

    bitsandbytes 0.50 on CPUs with AVX512-BF16 repacks a Linear4bit's weight at its first no-grad
    forward into a layout whose matmul has no backward: gradients through it are then silently
    wrong or the step crashes. Returns how many layers were switched.
    """
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


@register("qlora")
class QLoRA(LoRA):
    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        if self.cfg.get("quant_type", "nf4") not in {"nf4", "fp4"}:
            raise ConfigError(f"method.quant_type must be nf4 or fp4, got {self.cfg.get('quant_type')!r}")

    def load_kwargs(self, compute_dtype: torch.dtype, info: ModelInfo) -> dict[str, Any]:
        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=self.cfg.get("quant_type", "nf4"),
                bnb_4bit_use_double_quant=bool(self.cfg.get("double_quant", True)),
                bnb_4bit_compute_dtype=compute_dtype,
                # A freshly initialised head as a 4-bit layer fails at its first forward. With no
                # head (causal LM), None keeps transformers' default skips, so lm_head stays as
                # in the QLoRA paper; an empty list would quantise it.
                llm_int8_skip_modules=list(info.head_modules) or None,
            )
        }

    def after_load(self, model: nn.Module) -> None:
        disable_cpu_packed_4bit(model)
