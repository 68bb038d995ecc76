"""Analytic FLOPs of one training step."""
from __future__ import annotations

from torch import nn

from peftbench.experiments.meters.shapes import base_config, in_body, linear_dims


def train_flops_per_step(model: nn.Module, batch: int, seq: float) -> dict[str, float]:
    """Analytic FLOPs of one training step.

    Forward: 2 FLOPs per weight per token for every linear layer (frozen, 4-bit, adapter) plus
    attention scores and mixing (4*b*s^2*h per layer). Backward: input gradients (2x weights
    per token) wherever any body parameter trains, weight gradients (2x) only for trainable
    layers: LoRA skips the weight gradients of its frozen layers, a linear probe backpropagates
    into its head alone. Embedding lookups, norms and softmax are not counted.
    """
    tokens = batch * seq
    cfg = base_config(model)
    attn = 4 * batch * seq * seq * cfg.hidden_size * cfg.num_hidden_layers
    dims = linear_dims(model)
    total = sum(d for _, d, _ in dims)
    trainable = sum(d for _, d, t in dims if t)
    body_trains = any(p.requires_grad for n, p in model.named_parameters() if in_body(n))
    forward = 2 * tokens * total + attn
    backward_input = (2 * tokens * total + 2 * attn) if body_trains else 0
    backward_weight = 2 * tokens * trainable
    return {"flops_per_step": float(forward + backward_input + backward_weight), "flops_forward": float(forward)}
