"""LoftQ (Li et al. 2023) through peft's `init_lora_weights: loftq`.

peft 0.21 runs LoftQ's quantise-and-SVD alternation on a CUDA (or XPU) device only, whatever
device the model is on, so without one the method is refused before any weights load.
"""
from __future__ import annotations

import torch

from methods.base import ConfigError, ModelInfo
from methods.peft_config import PeftConfigMethod
from methods.registry import register


def _accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


@register("loftq")
class LoftQ(PeftConfigMethod):
    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        if not _accelerator():
            raise ConfigError("LoftQ needs a CUDA or XPU device: peft 0.21 computes its initialisation there even for a "
                              "CPU model; run it on a GPU machine, or use pissa/olora on CPU")
