"""Riemannian-preconditioned LoRA (Zhang & Pilanci 2024): LoRA whose A and B gradients are
preconditioned by an r x r matrix each step, through peft's create_riemannian_optimizer."""
import torch
from peft.optimizers import create_riemannian_optimizer
from torch import nn

from peftbench.methods.base import ConfigError, ModelInfo
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


@register("lora_riemannian")
class LoRARiemannian(LoRA):
    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        if not float(self.cfg.get("riemannian_reg", 1e-2)) > 0:
            raise ConfigError("method.riemannian_reg must be > 0 (it keeps the r x r preconditioner invertible)")

    def optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return create_riemannian_optimizer(model, torch.optim.AdamW, lr=lr, reg=float(self.cfg.get("riemannian_reg", 1e-2)), weight_decay=weight_decay)
