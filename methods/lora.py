"""LoRA through peft.LoraConfig. DoRA, rsLoRA, LoRA+ and QLoRA are LoRA with one thing changed."""
from __future__ import annotations

from typing import Any, ClassVar

from peft import LoraConfig

from peftbench.methods.base import ConfigError, ModelInfo, require_positive_int, resolve_targets
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register


@register("lora")
class LoRA(PeftMethod):
    # LoraConfig flags that distinguish a variant; the rest of the config is shared.
    peft_flags: ClassVar[dict[str, Any]] = {}
    mixed_batch = True  # peft's LoRA layers take `adapter_names=` (one adapter per row)

    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        require_positive_int(self.cfg.get("r"), "method.r")
        if not float(self.cfg.get("alpha", 0)) > 0:
            raise ConfigError(f"method.alpha must be > 0, got {self.cfg.get('alpha')!r}")
        if not 0.0 <= float(self.cfg.get("dropout", 0.0)) < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.cfg.get('dropout')!r}")
        resolve_targets(self.cfg["target_modules"], info)

    def peft_class(self) -> type:
        return LoraConfig

    def peft_kwargs(self) -> dict[str, Any]:
        return {"r": int(self.cfg["r"]), "lora_alpha": float(self.cfg["alpha"]),
                "lora_dropout": float(self.cfg.get("dropout", 0.0)), **self.peft_flags}
