"""Any method peft already has, chosen by YAML alone (`impl: peft_config`, `peft_class: ...`)."""
from __future__ import annotations

from typing import Any

import peft

from methods.base import ConfigError, ModelInfo, require_positive_int
from methods.peft_base import PeftMethod
from methods.registry import register


@register("peft_config")
class PeftConfigMethod(PeftMethod):
    @property
    def can_merge(self) -> bool:  # type: ignore[override]
        return bool(self.cfg.get("can_merge", True))

    def peft_class(self) -> type:
        name = self.cfg.get("peft_class")
        cls = getattr(peft, str(name), None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, peft.PeftConfig):
            raise ConfigError(f"method.peft_class {name!r} is not a peft config class (e.g. LoHaConfig, LoKrConfig, VeraConfig)")
        return cls

    def peft_kwargs(self) -> dict[str, Any]:
        return dict(self.cfg.get("peft_kwargs") or {})

    def validate(self, info: ModelInfo) -> None:
        r = self.peft_kwargs().get("r")
        if r is not None:
            require_positive_int(r, "method.peft_kwargs.r")
        try:  # peft checks its own arguments when the config is built: before any weights load
            self.peft_config(info)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"method.peft_kwargs rejected by {self.cfg.get('peft_class')}: {e}") from None
