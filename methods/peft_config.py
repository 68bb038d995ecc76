"""Any method peft already has, chosen by YAML alone (`impl: peft_config`, `peft_class: ...`)."""
from __future__ import annotations

import dataclasses
from typing import Any

import peft

from peftbench.methods.base import ConfigError, ModelInfo, require_positive_int, resolve_targets
from peftbench.methods.peft_base import PeftMethod
from peftbench.methods.registry import register


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

    def peft_kwargs(self, info: ModelInfo | None = None) -> dict[str, Any]:
        """The YAML's peft_kwargs; given the model, plus the resolved targets. `target_modules: null`
        leaves targets to peft_kwargs (a regex over any module type, e.g. LayerNorms) or to peft
        (prompt methods); `resolve_kwargs` names other arguments holding presets or layer lists
        (IA3's feedforward_modules)."""
        kwargs = dict(self.cfg.get("peft_kwargs") or {})
        if info is None:
            return kwargs
        if self.cfg.get("target_modules") is not None:
            kwargs["target_modules"] = resolve_targets(self.cfg["target_modules"], info)
        for key, targets in (self.cfg.get("resolve_kwargs") or {}).items():
            kwargs[key] = resolve_targets(targets, info)
        if "modules_to_save" in {f.name for f in dataclasses.fields(self.peft_class())}:
            kwargs.setdefault("modules_to_save", list(info.head_modules))  # the fresh task head trains and is saved
        return {**kwargs, "task_type": info.task_type}

    def peft_config(self, info: ModelInfo) -> peft.PeftConfig:
        return self.peft_class()(**self.peft_kwargs(info))

    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        r = self.peft_kwargs().get("r")
        if r is not None:
            require_positive_int(r, "method.peft_kwargs.r")
        try:  # peft checks its own arguments when the config is built: before any weights load
            self.peft_config(info)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"method.peft_kwargs rejected by {self.cfg.get('peft_class')}: {e}") from None
