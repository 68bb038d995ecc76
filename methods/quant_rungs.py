"""Rungs of the quantisation ladder that are LoRA with the base weights stored differently:
bf16 weights, and 8-bit weights (bitsandbytes LLM.int8) quantised at load time. (The 4-bit rungs
are QLoRA's quant_type/double_quant settings; LoftQ is a LoraConfig init.)

In the 8-bit rung the task head stays out of quantisation as in QLoRA. DoRA on 8-bit layers fails
in peft with bitsandbytes 0.50 on CPU, so `use_dora: true` is refused before loading.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import BitsAndBytesConfig

from peftbench.methods.base import ConfigError, ModelInfo
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


@register("lora_int8")
class LoRAInt8(LoRA):
    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        if self.cfg.get("use_dora"):
            raise ConfigError("DoRA on 8-bit (LLM.int8) weights fails in peft + bitsandbytes; use method=dora on fp32/bf16 weights or method=lora_int8 without use_dora")

    @property
    def peft_flags(self) -> dict[str, Any]:  # type: ignore[override]
        return {"use_dora": bool(self.cfg.get("use_dora", False))}

    def load_kwargs(self, compute_dtype: torch.dtype, info: ModelInfo) -> dict[str, Any]:
        # With no head (causal LM), None keeps transformers' default skips (lm_head stays).
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(info.head_modules) or None)}


@register("lora_bf16w")
class LoRABf16Weights(LoRA):
    """Base weights loaded in bf16 (half the bytes of fp32); the adapter stays fp32 (peft upcasts
    it). Refused under precision=fp32, which would then compute in bf16 while labelled fp32."""

    def load_kwargs(self, compute_dtype: torch.dtype, info: ModelInfo) -> dict[str, Any]:
        if compute_dtype != torch.bfloat16:
            raise ConfigError("method lora_bf16w stores the base in bf16 and needs precision=bf16; set precision=bf16")
        return {"dtype": torch.bfloat16}
