"""LoRA-FA (Zhang et al. 2023): LoRA with A frozen at its random init and only B trained, with
peft's create_lorafa_optimizer (AdamW whose B gradient is projected as in the paper)."""
import torch
from peft.optimizers import create_lorafa_optimizer
from torch import nn

from methods.lora import LoRA
from methods.registry import register


@register("lorafa")
class LoRAFA(LoRA):
    def optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return create_lorafa_optimizer(model, r=int(self.cfg["r"]), lora_alpha=float(self.cfg["alpha"]), lr=lr, weight_decay=weight_decay)
