"""AdaLoRA (Zhang et al. 2023): SVD-form LoRA whose rank budget is reallocated during training.

The budget schedule needs the run's total steps (`total_step: ${steps}` in the YAML); its warm-up
and final phases are given as fractions of it so that one YAML fits any `steps`. The per-step
reallocation runs in the `on_step` hook.
"""
from __future__ import annotations

from torch import nn

from peftbench.methods.base import ConfigError, ModelInfo
from peftbench.methods.peft_config import PeftConfigMethod
from peftbench.methods.registry import register


@register("adalora")
class AdaLoRA(PeftConfigMethod):
    def validate(self, info: ModelInfo) -> None:
        for key in ("tinit_frac", "tfinal_frac"):
            if not 0.0 <= float(self.cfg.get(key, 0.0)) < 1.0:
                raise ConfigError(f"method.{key} must be in [0, 1), got {self.cfg.get(key)!r}")
        if float(self.cfg.get("tinit_frac", 0)) + float(self.cfg.get("tfinal_frac", 0)) >= 1.0:
            raise ConfigError("method.tinit_frac + method.tfinal_frac must be < 1: no steps would be left to prune ranks")
        super().validate(info)

    def peft_kwargs(self, info: ModelInfo | None = None) -> dict:
        if info is None:
            return super().peft_kwargs()
        total = int(self.cfg["total_step"])
        return {
            **super().peft_kwargs(info),
            "total_step": total,
            "tinit": int(float(self.cfg.get("tinit_frac", 0.0)) * total),
            "tfinal": int(float(self.cfg.get("tfinal_frac", 0.0)) * total),
        }

    def on_step(self, model: nn.Module, step: int) -> None:
        model.base_model.update_and_allocate(step)

    def step_state(self, model: nn.Module) -> dict:
        """The rank allocator's running importance scores and the rank pattern chosen so far."""
        allocator, config = model.base_model.rankallocator, model.base_model.peft_config[model.base_model.trainable_adapter_name]
        return {"ipt": dict(allocator.ipt), "exp_avg_ipt": dict(allocator.exp_avg_ipt), "exp_avg_unc": dict(allocator.exp_avg_unc),
                "rank_pattern": config.rank_pattern}

    def load_step_state(self, model: nn.Module, state: dict) -> None:
        allocator, config = model.base_model.rankallocator, model.base_model.peft_config[model.base_model.trainable_adapter_name]
        device = next(model.parameters()).device
        allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (
            {n: t.to(device) for n, t in state[k].items()} for k in ("ipt", "exp_avg_ipt", "exp_avg_unc"))
        config.rank_pattern = state["rank_pattern"]
