"""The analytic memory estimate a measured peak is compared against."""
from __future__ import annotations

from torch import nn

from experiments.meters.memory import weight_bytes
from experiments.meters.shapes import base_config, in_body, is_4bit, linear_dims


def estimate_train_memory(model: nn.Module, batch: int, seq: int, act_bytes: int) -> dict[str, int]:
    """Analytic estimate: weights + grads + AdamW states + activations (Korthikanti et al. 2022,
    s*b*h*(34 + 5*a*s/h) bytes per layer at 2 bytes per value, scaled to `act_bytes`), plus the
    bf16 copies of linear weights that autocast caches for the step."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    cfg = base_config(model)
    h, layers, heads = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    body_trains = any(p.requires_grad for n, p in model.named_parameters() if in_body(n))
    per_layer = seq * batch * h * (34 + 5 * heads * seq / h) * act_bytes / 2
    # without gradients through the body (linear probe) nothing is saved for backward, but one
    # layer's activations are alive at a time during the forward
    activations = int(per_layer * layers) if body_trains else int(per_layer)
    est = {
        "est_weight_bytes": weight_bytes(model),
        "est_grad_bytes": n_train * 4,
        "est_optimizer_bytes": n_train * 8,
        "est_activation_bytes": activations,
        # bf16 copies of linear weights made by autocast live until backward where input
        # gradients flow (saved for grad_input = grad_out @ W), else only for trainable ones
        # (4-bit layers dequantise per call and keep no bf16 copy)
        "est_autocast_cache_bytes": (sum(d for n, d, t in linear_dims(model) if (body_trains or t) and not is_4bit(model, n)) * 2) if act_bytes == 2 else 0,
    }
    est["est_train_mem_bytes"] = sum(est.values())
    est["est_train_mem_growth_bytes"] = est["est_train_mem_bytes"] - est["est_weight_bytes"]
    return est
