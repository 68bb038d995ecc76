"""LoRA-FA (Zhang et al. 2023): LoRA with A frozen at its random init and only B trained, with
peft's create_lorafa_optimizer (AdamW whose B gradient is projected as in the paper)."""
import torch
from peft.optimizers import create_lorafa_optimizer
from torch import nn

from peftbench.methods.base import ModelInfo
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


@register("lorafa")
class LoRAFA(LoRA):
    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        # frozen here as well as in the optimizer, so that the trainable count excludes A
        model = super().wrap(model, info)
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.requires_grad_(False)
        return model

    def optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return create_lorafa_optimizer(model, r=int(self.cfg["r"]), lora_alpha=float(self.cfg["alpha"]), lr=lr, weight_decay=weight_decay)
