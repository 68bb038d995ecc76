"""Any method peft already has, chosen by YAML alone (`impl: peft_config`, `peft_class: ...`)."""
from __future__ import annotations

from pathlib import Path

import peft
from torch import nn

from methods.base import ConfigError, Method, ModelInfo, positive_int, resolve_targets
from methods.registry import register


@register("peft_config")
class PeftConfigMethod(Method):
    @property
    def can_merge(self) -> bool:  # type: ignore[override]
        return bool(self.cfg.get("can_merge", True))

    def config_class(self) -> type:
        name = self.cfg.get("peft_class")
        cls = getattr(peft, str(name), None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, peft.PeftConfig):
            raise ConfigError(f"method.peft_class {name!r} is not a peft config class (e.g. LoHaConfig, LoKrConfig, VeraConfig)")
        return cls

    def validate(self, info: ModelInfo) -> None:
        kwargs = dict(self.cfg.get("peft_kwargs") or {})
        r = kwargs.get("r")
        if r is not None and not positive_int(r):
            raise ConfigError(f"method.peft_kwargs.r must be a positive integer, got {r!r}; set e.g. method.peft_kwargs.r=8")
        try:  # peft checks its own arguments when the config is built: before any weights load
            self.peft_config(info)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"method.peft_kwargs rejected by {self.cfg.get('peft_class')}: {e}") from None

    def peft_config(self, info: ModelInfo) -> peft.PeftConfig:
        return self.config_class()(
            target_modules=resolve_targets(self.cfg["target_modules"], info),
            modules_to_save=list(info.head_modules),
            task_type=info.task_type,
            **dict(self.cfg.get("peft_kwargs") or {}),
        )

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        return peft.get_peft_model(model, self.peft_config(info))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def save(self, model: nn.Module, path: Path) -> None:
        model.save_pretrained(str(path))
