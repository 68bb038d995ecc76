"""LoftQ (Li et al. 2023): each targeted weight W is replaced by its NF4 quantisation Q, and LoRA's
A, B start at the best rank-r fit of the error W - Q (alternating loftq_iter times).

peft's `init_lora_weights: loftq` runs this on a CUDA or XPU device only (it moves every weight
to `cuda` even for a CPU model). Where neither exists, the same algorithm runs here on the CPU
with bitsandbytes' CPU 4-bit kernels. As in peft, A and B are not divided by the LoRA scaling, so
the YAML sets lora_alpha = r (scaling 1) to make Q + BA the fit that LoftQ computed. The base keeps
the dequantised values in its own dtype: 4-bit quality with LoftQ's correction, not 4-bit storage.
"""
from __future__ import annotations

import dataclasses

import peft
import torch
from peft.tuners.lora import LoraLayer
from peft.utils.loftq_utils import _low_rank_decomposition
from torch import nn

from peftbench.methods.base import ModelInfo
from peftbench.methods.peft_config import PeftConfigMethod
from peftbench.methods.registry import register


def _accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


@torch.no_grad()
def loftq_cpu(weight: torch.Tensor, rank: int, num_iter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dequantised NF4 weight, A, B) as peft's loftq_init computes them, on the CPU."""
    import bitsandbytes.functional as F

    w = weight.float()
    res = w.clone()
    for i in range(num_iter):
        packed, state = F.quantize_4bit(res.contiguous(), blocksize=64, compress_statistics=False, quant_type="nf4")
        q = F.dequantize_4bit(packed, state).float()
        fit = _low_rank_decomposition(w - q, reduced_rank=rank)
        lo, ro = fit["L"], fit["R"]
        if i + 1 < num_iter:
            res = w - lo @ ro
    return q.to(weight.dtype), ro, lo


@register("loftq")
class LoftQ(PeftConfigMethod):
    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        if _accelerator():
            return super().wrap(model, info)
        config = self.peft_config(info)
        loftq = dict(config.loftq_config)
        if int(loftq.get("loftq_bits", 4)) != 4:
            raise ValueError("LoftQ on the CPU supports loftq_bits=4 only")
        wrapped = peft.get_peft_model(model, dataclasses.replace(config, init_lora_weights=True, loftq_config={}))
        for module in wrapped.modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                base = module.get_base_layer()
                q, a, b = loftq_cpu(base.weight.data, module.r["default"], int(loftq.get("loftq_iter", 1)))
                base.weight.data = q
                module.lora_A["default"].weight.data = a.to(module.lora_A["default"].weight.dtype)
                module.lora_B["default"].weight.data = b.to(module.lora_B["default"].weight.dtype)
        return wrapped
