"""Bottleneck adapters (Houlsby 2019, Pfeiffer 2020), the project's own code.

The `adapters` package pins transformers 4.57, so these are written here. An adapter sits on the
output of a sub-layer's output projection, before the residual add and layer norm:
    y = W x + b;  y <- y + up(act(down(y)))
`up` starts at zero, so at step 0 the adapted model computes exactly what the base model does.
There is no linear map to fold the adapter into, so it cannot be merged.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file
from torch import nn

from peftbench.methods.base import ConfigError, Method, ModelInfo, require_positive_int, save_trainable, unfreeze_heads

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, size: int, non_linearity: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.act = ACTIVATIONS[non_linearity]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.dropout(self.act(self.down(y))))


class AdaptedLinear(nn.Module):
    """A frozen Linear followed by a trainable bottleneck on its output."""

    def __init__(self, base: nn.Linear, adapter: Bottleneck):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


class BottleneckMethod(Method):
    """Shared by Houlsby and Pfeiffer; subclasses name the sites only."""

    sites: ClassVar[tuple[str, ...]] = ()
    can_merge = False

    def bottleneck_size(self, info: ModelInfo) -> int:
        if self.cfg.get("bottleneck_size") is not None:
            return require_positive_int(self.cfg["bottleneck_size"], "method.bottleneck_size", 64)
        rf = float(self.cfg.get("reduction_factor", 16))
        if rf <= 0:
            raise ConfigError(f"method.reduction_factor must be > 0, got {rf}")
        return int(info.hidden_size // rf)

    def site_names(self, info: ModelInfo) -> list[str]:
        patterns = [re.compile(info.adapter_sites[s]) for s in self.sites]
        return [n for n in info.linear_names if any(p.search(n) for p in patterns)]

    def validate(self, info: ModelInfo) -> None:
        missing = [s for s in self.sites if s not in info.adapter_sites]
        if missing:
            raise ConfigError(f"model {info.name} defines no adapter_sites {missing}; add them to conf/model/{info.name}.yaml")
        size = self.bottleneck_size(info)
        if size < 1:
            raise ConfigError(
                f"bottleneck size comes out as {size} (hidden {info.hidden_size} / reduction_factor "
                f"{self.cfg.get('reduction_factor')}); use a smaller method.reduction_factor or set method.bottleneck_size>=1"
            )
        if self.cfg.get("non_linearity", "relu") not in ACTIVATIONS:
            raise ConfigError(f"method.non_linearity must be one of {sorted(ACTIVATIONS)}")
        if not self.site_names(info):
            raise ConfigError(f"adapter sites {self.sites} match no layer of model {info.name}")

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        model.requires_grad_(False)
        size = self.bottleneck_size(info)
        for name in self.site_names(info):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            base = getattr(parent, child)
            adapter = Bottleneck(base.out_features, size, self.cfg.get("non_linearity", "relu"), float(self.cfg.get("dropout", 0.0)))
            adapter.to(device=base.weight.device)
            setattr(parent, child, AdaptedLinear(base, adapter))
        unfreeze_heads(model, info)
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        save_trainable(model, path, "adapter.safetensors")
        meta = {"method": self.impl_name, "config": self.cfg}
        (path / "adapter_config.json").write_text(json.dumps(meta, indent=2, default=str))

    def load_saved(self, base: nn.Module, info: ModelInfo, path: Path, adapter_name: str = "default") -> nn.Module:
        return self.load(self.wrap(base, info), path)

    @staticmethod
    def load(model: nn.Module, path: Path) -> nn.Module:
        """Load adapter (and head) weights saved by `save` into an already wrapped model."""
        state = load_file(str(Path(path) / "adapter.safetensors"))
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise ValueError(f"{path}: adapter holds tensors the model lacks: {sorted(missing)[:3]}")
        model.load_state_dict(state, strict=False)
        return model
