"""The analytic memory estimate a measured peak is compared against."""
from __future__ import annotations

import torch
from torch import nn

from peftbench.experiments.meters.memory import weight_bytes
from peftbench.experiments.meters.shapes import base_config, in_body, is_4bit, linear_dims


def estimate_train_memory(model: nn.Module, batch: int, seq: int, act_bytes: int, shards: int = 1) -> dict[str, int]:
    """Analytic estimate for one device: weights + grads + AdamW states + activations (Korthikanti
    et al. 2022, s*b*h*(34 + 5*a*s/h) bytes per layer at 2 bytes per value, scaled to
    `act_bytes`), plus the bf16 copies of fp32 linear weights that autocast caches for the step.
    Gradients and AdamW's two states take the trainable parameters' own dtype (fp32 master
    weights: 4 + 8 bytes; bf16 weights: 2 + 4).

    `batch` is the examples one device holds. `shards` is FSDP's world size: parameters,
    gradients and optimizer states are split over that many devices (DDP keeps all of them whole
    on each: shards=1), and FSDP holds a layer's parameters whole while it computes, with the
    next one prefetched (two of the largest layer)."""
    train_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    cfg = base_config(model)
    h, layers, heads = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    body_trains = any(p.requires_grad for n, p in model.named_parameters() if in_body(n))
    per_layer = seq * batch * h * (34 + 5 * heads * seq / h) * act_bytes / 2
    # without gradients through the body (linear probe) nothing is saved for backward, but one
    # layer's activations are alive at a time during the forward
    activations = int(per_layer * layers) if body_trains else int(per_layer)
    est = {
        "est_weight_bytes": weight_bytes(model) // shards,
        "est_grad_bytes": train_bytes // shards,
        "est_optimizer_bytes": 2 * train_bytes // shards,
        "est_activation_bytes": activations,
        # bf16 copies of fp32 linear weights made by autocast live until backward where input
        # gradients flow (saved for grad_input = grad_out @ W), else only for trainable ones
        # (4-bit layers dequantise per call and keep no bf16 copy; bf16 weights need none)
        "est_autocast_cache_bytes": (sum(d for n, d, t in linear_dims(model)
                                         if (body_trains or t) and not is_4bit(model, n) and _fp32_weight(model, n)) * 2) if act_bytes == 2 else 0,
        "est_unsharded_layer_bytes": 2 * _largest_block_bytes(model) if shards > 1 else 0,
    }
    est["est_train_mem_bytes"] = sum(est.values())
    est["est_train_mem_growth_bytes"] = est["est_train_mem_bytes"] - est["est_weight_bytes"]
    return est


def _fp32_weight(model: nn.Module, name: str) -> bool:
    return model.get_submodule(name).weight.dtype == torch.float32


def _largest_block_bytes(model: nn.Module) -> int:
    """Bytes of the largest repeated block (the layers transformers declares unsplittable)."""
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    return max((weight_bytes(m) for m in model.modules() if type(m).__name__ in names), default=0)
