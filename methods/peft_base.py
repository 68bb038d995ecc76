"""What every peft-backed method shares: the config's common arguments, wrap, merge and save.
A subclass only says which peft config class it builds and with which method-specific arguments."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import peft
from torch import nn

from peftbench.methods.base import Method, ModelInfo, resolve_targets


class PeftMethod(Method):
    can_merge = True
    hot_swap = True  # peft keeps named adapters on one base (load_adapter / set_adapter)

    def peft_class(self) -> type:
        raise NotImplementedError

    def peft_kwargs(self) -> dict[str, Any]:
        """The method's own arguments to its peft config class."""
        return {}

    def peft_config(self, info: ModelInfo) -> peft.PeftConfig:
        return self.peft_class()(
            target_modules=resolve_targets(self.cfg["target_modules"], info),
            modules_to_save=list(info.head_modules),  # the fresh task head trains and is saved
            task_type=info.task_type,
            **self.peft_kwargs(),
        )

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        return peft.get_peft_model(model, self.peft_config(info))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def save(self, model: nn.Module, path: Path) -> None:
        model.save_pretrained(str(path))

    def load_saved(self, base: nn.Module, info: ModelInfo, path: Path, adapter_name: str = "default") -> nn.Module:
        return peft.PeftModel.from_pretrained(base, str(path), adapter_name=adapter_name)
