"""Any method peft already has, chosen by YAML alone (`impl: peft_config`, `peft_class: ...`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import peft
from torch import nn

from methods.base import ConfigError, Method, ModelInfo, resolve_targets
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
        super().validate(info)
        kwargs = dict(self.cfg.get("peft_kwargs") or {})
        r = kwargs.get("r")
        if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r <= 0):
            raise ConfigError(f"method.peft_kwargs.r must be a positive integer, got {r!r}; set e.g. method.peft_kwargs.r=8")
        try:  # peft checks its own arguments when the config is built: before any weights load
            self.peft_config(info)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"method.peft_kwargs rejected by {self.cfg.get('peft_class')}: {e}") from None

    def peft_kwargs(self, info: ModelInfo) -> dict:
        """peft_kwargs, plus the resolved targets. `target_modules: null` leaves targets to
        peft_kwargs (a regex over any module type, e.g. LayerNorms) or to peft (prompt methods);
        `resolve_kwargs` names other arguments holding presets or layer lists (IA3's
        feedforward_modules)."""
        kwargs = dict(self.cfg.get("peft_kwargs") or {})
        if self.cfg.get("target_modules") is not None:
            kwargs["target_modules"] = resolve_targets(self.cfg["target_modules"], info)
        for key, targets in (self.cfg.get("resolve_kwargs") or {}).items():
            kwargs[key] = resolve_targets(targets, info)
        if "modules_to_save" in {f.name for f in dataclasses.fields(self.config_class())}:
            kwargs.setdefault("modules_to_save", list(info.head_modules))
        return {**kwargs, "task_type": info.task_type}

    def peft_config(self, info: ModelInfo) -> peft.PeftConfig:
        return self.config_class()(**self.peft_kwargs(info))

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        return peft.get_peft_model(model, self.peft_config(info))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def save(self, model: nn.Module, path: Path) -> None:
        model.save_pretrained(str(path))
