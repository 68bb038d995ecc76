"""What a method is: four answers (wrap, optimizer groups, can merge, merge) plus save.

Everything else (the loop, measurement, the record) is shared and cannot tell methods apart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from peftbench.methods.errors import ConfigError  # noqa: F401  (raised by every method; imported from here)


def save_trainable(model: nn.Module, path: Path, filename: str) -> None:
    """Save exactly the parameters that trained (the adapter, biases or head) as safetensors."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}, str(path / filename))


def positive_int(v: Any) -> bool:
    """The one positive-integer test of the project (a bool is not an integer here)."""
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def require_positive_int(value: Any, name: str, example: int = 8) -> int:
    """`positive_int` as a check that raises the one-line error."""
    if not positive_int(value):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}; set e.g. {name}={example}")
    return value


@dataclass(frozen=True)
class ModelInfo:
    """What a method may know about a model before its weights are loaded."""

    name: str
    kind: str  # classifier | causal_lm
    task_type: str  # peft TaskType name: SEQ_CLS | CAUSAL_LM
    linear_names: tuple[str, ...]
    hidden_size: int
    head_modules: tuple[str, ...] = ()
    target_presets: Mapping[str, list[str]] = field(default_factory=dict)
    adapter_sites: Mapping[str, str] = field(default_factory=dict)
    model_type: str = ""  # transformers' config.model_type (bert, llama, ...)


def _short_names(names: tuple[str, ...]) -> list[str]:
    """Layer names without the `layer.N.` prefix, e.g. `attention.self.query`."""
    out = set()
    for n in names:
        tail = re.split(r"\.\d+\.", n)[-1]
        out.add(tail)
    return sorted(out)


def resolve_targets(targets: Any, info: ModelInfo) -> list[str]:
    """Turn a preset name or a list of layer names into the concrete full names of Linear layers.

    A list entry matches a layer whose full name equals it or ends with `.` + entry.
    """
    body = [n for n in info.linear_names if not _is_head(n, info)]
    if targets is None:
        raise ConfigError(f"method.target_modules is null but this method adapts named layers; use one of "
                          f"{sorted(info.target_presets)} or a list of layer names")
    if isinstance(targets, str):
        if targets not in info.target_presets:
            raise ConfigError(
                f"unknown target preset {targets!r} for model {info.name}; use one of {sorted(info.target_presets)} "
                f"or a list of layer names, e.g. [{targets}] (available: {', '.join(_short_names(tuple(body)))})"
            )
        patterns = [re.compile(p) for p in info.target_presets[targets]]
        found = [n for n in body if any(p.search(n) for p in patterns)]
        unmatched: list[str] = [] if found else [targets]
    else:
        entries = [str(t) for t in targets]
        found = [n for n in body if any(n == t or n.endswith("." + t) for t in entries)]
        unmatched = [t for t in entries if not any(n == t or n.endswith("." + t) for n in body)]
    if unmatched or not found:
        raise ConfigError(
            f"target modules {unmatched or targets} match no layer of model {info.name}; "
            f"available: {', '.join(_short_names(tuple(body)))} or presets {sorted(info.target_presets)}"
        )
    return found


def _is_head(name: str, info: ModelInfo) -> bool:
    return any(name == h or name.startswith(h + ".") for h in info.head_modules)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The one optimizer every method uses: AdamW, no decay on biases and norms (1-D params)."""
    decay, no_decay = [], []
    for _, p in trainable_parameters(model):
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def unfreeze_heads(model: nn.Module, info: ModelInfo) -> None:
    for name, module in model.named_modules():
        if name in info.head_modules:
            for p in module.parameters():
                p.requires_grad_(True)


def check_supported(cfg: Mapping[str, Any], info: ModelInfo) -> None:
    """Refuse a model a method cannot adapt, as its YAML declares under `unsupported`: a list of
    {<ModelInfo field>: value, ..., reason: ...}; an entry applies when every field matches."""
    known = {f.name for f in fields(ModelInfo)}
    for entry in cfg.get("unsupported") or []:
        when = {k: v for k, v in dict(entry).items() if k != "reason"}
        if not when or set(when) - known:
            raise ConfigError(f"method.unsupported entry {dict(entry)} must match on fields of {sorted(known)} and give a reason")
        if all(str(getattr(info, k, None)) == str(v) for k, v in when.items()):
            where = ", ".join(f"{k}={v}" for k, v in when.items())
            raise ConfigError(f"method {cfg.get('name')} cannot run on model {info.name} ({where}): {entry.get('reason')}")


BatchSource = Callable[[int], Iterable[Mapping[str, torch.Tensor]]]


class Method:
    """Base class. Subclasses override only what differs."""

    impl_name: ClassVar[str] = "?"
    can_merge: ClassVar[bool] = False

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = dict(cfg)

    # -- before loading --------------------------------------------------------------------
    def validate(self, info: ModelInfo) -> None:
        """Raise ConfigError on bad hyperparameters. Runs before any weights are loaded."""
        check_supported(self.cfg, info)

    def load_kwargs(self, compute_dtype: torch.dtype, info: ModelInfo) -> dict[str, Any]:
        """Extra keyword arguments for `from_pretrained` (QLoRA quantises at load time)."""
        return {}

    def after_load(self, model: nn.Module) -> None:
        """Fix-ups that must happen right after loading, before any forward pass."""

    # -- the four questions ----------------------------------------------------------------
    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        raise NotImplementedError

    def optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return adamw(model, lr, weight_decay)

    def merge(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError(f"{self.impl_name} cannot be merged into the base weights")

    def save(self, model: nn.Module, path: Path) -> None:
        """Write what a user must keep to restore the trained model (adapter or checkpoint)."""
        raise NotImplementedError

    # -- serving (experiments/meters/serving.py) ------------------------------------------------------
    def load_saved(self, base: nn.Module, info: ModelInfo, path: Path, adapter_name: str = "default") -> nn.Module:
        """Put what `save` wrote back onto a loaded base model, as a server starting a task would."""
        raise NotImplementedError(f"{self.impl_name} saves no adapter that loads onto a base model")

    @property
    def serving(self) -> dict[str, bool]:
        """What a server can do with this method's adapters: keep several named ones on one base
        and switch between them (`hot_swap`), and mix them within one batch (`mixed_batch`);
        `load`: the method puts a saved adapter back onto a base (`load_saved`).
        A method's YAML may set either key to override its class."""
        declared = {"hot_swap": self.hot_swap, "mixed_batch": self.mixed_batch}
        loads = type(self).load_saved is not Method.load_saved
        return {"load": loads, **{k: loads and bool(self.cfg.get(k, v)) for k, v in declared.items()}}

    hot_swap: ClassVar[bool] = False
    mixed_batch: ClassVar[bool] = False

    # -- hooks for methods that need more than a config (no-ops by default) -------------------
    def prepare_with_data(self, model: nn.Module, info: ModelInfo, batches: BatchSource) -> None:
        """A pass over training data before `wrap` (EVA, CorDA). `batches(n)` yields the first n
        training batches on the CPU; the default never calls it, so other methods read no data."""

    def on_step(self, model: nn.Module, step: int) -> None:
        """After each optimizer step, before the gradients are cleared (AdaLoRA's rank budget)."""

    def step_state(self, model: nn.Module) -> dict[str, Any]:
        """What `on_step` keeps between steps outside the weights and the optimizer, for a training
        checkpoint (AdaLoRA's importance scores); a method whose on_step keeps nothing returns {}."""
        return {}

    def load_step_state(self, model: nn.Module, state: Mapping[str, Any]) -> None:
        """Put back what `step_state` returned, when a run resumes from a checkpoint."""
