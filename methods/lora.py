"""LoRA through peft.LoraConfig. DoRA, rsLoRA, LoRA+ and QLoRA are LoRA with one thing changed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from peft import LoraConfig, get_peft_model
from torch import nn

from methods.base import ConfigError, Method, ModelInfo, resolve_targets
from methods.registry import register


@register("lora")
class LoRA(Method):
    can_merge = True
    # LoraConfig flags that distinguish a variant; the rest of the config is shared.
    peft_flags: ClassVar[dict[str, Any]] = {}

    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        r = self.cfg.get("r")
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise ConfigError(f"method.r must be a positive integer, got {r!r}; set e.g. method.r=8")
        if not float(self.cfg.get("alpha", 0)) > 0:
            raise ConfigError(f"method.alpha must be > 0, got {self.cfg.get('alpha')!r}")
        if not 0.0 <= float(self.cfg.get("dropout", 0.0)) < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.cfg.get('dropout')!r}")
        resolve_targets(self.cfg["target_modules"], info)

    def lora_config(self, info: ModelInfo) -> LoraConfig:
        return LoraConfig(
            r=int(self.cfg["r"]),
            lora_alpha=float(self.cfg["alpha"]),
            lora_dropout=float(self.cfg.get("dropout", 0.0)),
            target_modules=resolve_targets(self.cfg["target_modules"], info),
            modules_to_save=list(info.head_modules),
            task_type=info.task_type,
            **self.peft_flags,
        )

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        return get_peft_model(model, self.lora_config(info))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def save(self, model: nn.Module, path: Path) -> None:
        model.save_pretrained(str(path))
