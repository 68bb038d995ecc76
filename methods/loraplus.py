"""LoRA+ (Hayou et al. 2024): LoRA whose B matrices train at a higher learning rate.

The only method whose optimizer groups differ; built by peft's create_loraplus_optimizer, which
also puts every 1-D trainable parameter (the head's bias) in B's group at lr x ratio. That is
peft's reference behaviour and is kept (the README says so) rather than regrouped here.
"""
import torch
from peft.optimizers import create_loraplus_optimizer
from torch import nn

from peftbench.methods.base import ConfigError, ModelInfo
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


@register("loraplus")
class LoRAPlus(LoRA):
    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        if not float(self.cfg.get("loraplus_lr_ratio", 16)) >= 1:
            raise ConfigError("method.loraplus_lr_ratio must be >= 1 (ratio of B's lr to A's)")

    def optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        # A plain `weight_decay` kwarg is ignored by create_loraplus_optimizer; it reads this one.
        return create_loraplus_optimizer(
            model,
            optimizer_cls=torch.optim.AdamW,
            lr=lr,
            loraplus_lr_ratio=float(self.cfg.get("loraplus_lr_ratio", 16)),
            loraplus_weight_decay=weight_decay,
        )
