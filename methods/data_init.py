"""LoRA initialisations that read training data before training: EVA and CorDA.

Both are LoraConfig options in peft (`init_lora_weights: eva | corda`, set in the YAML); what they
add is a pass over the first `calibration_batches` training batches, done in the
`prepare_with_data` hook before the model is wrapped.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import peft
import torch
from peft.tuners.lora.corda import preprocess_corda
from torch import nn

from peftbench.methods.base import BatchSource, ConfigError, ModelInfo
from peftbench.methods.peft_config import PeftConfigMethod
from peftbench.methods.registry import register


def _inputs(batches: BatchSource, n: int, model: nn.Module, drop_labels: bool) -> Iterator[dict[str, torch.Tensor]]:
    device = next(model.parameters()).device
    for batch in batches(n):
        yield {k: v.to(device) for k, v in batch.items() if not (drop_labels and k == "labels")}


class _DataInit(PeftConfigMethod):
    def validate(self, info: ModelInfo) -> None:
        super().validate(info)
        n = self.cfg.get("calibration_batches")
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ConfigError(f"method.calibration_batches must be a positive integer, got {n!r}")

    def _calibration(self) -> int:
        return int(self.cfg["calibration_batches"])


@register("eva")
class EVA(_DataInit):
    """EVA (Paischer et al. 2024): A from the SVD of each layer's inputs, ranks redistributed by
    explained variance."""

    def prepare_with_data(self, model: nn.Module, info: ModelInfo, batches: BatchSource) -> None:
        self._config = self.peft_config(info)
        # a classifier's labels are one per sequence, not per token: they cannot mask tokens
        data = list(_inputs(batches, self._calibration(), model, drop_labels=info.task_type == "SEQ_CLS"))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self._state = peft.get_eva_state_dict(model, data, self._config, show_progress_bar=False)
        model.train(was_training)

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        if not hasattr(self, "_state"):
            raise RuntimeError("EVA needs prepare_with_data before wrap")
        wrapped = peft.get_peft_model(model, self._config, low_cpu_mem_usage=True)
        # computed on the bare model, the state's keys lack the PeftModel prefix that peft looks
        # them up by; unprefixed, every layer silently falls back to the default init
        state = {f"base_model.model.{k}": v for k, v in self._state.items()}
        peft.initialize_lora_eva_weights(wrapped, eva_state_dict=state, show_progress_bar=False)
        return wrapped


@register("corda")
class CorDA(_DataInit):
    """CorDA (Yang et al. 2024): adapters from the SVD of each weight times the covariance of
    its inputs on task data (`corda_method: kpm` keeps knowledge, `ipm` fits the task)."""

    def prepare_with_data(self, model: nn.Module, info: ModelInfo, batches: BatchSource) -> None:
        self._config = self.peft_config(info)
        data = list(_inputs(batches, self._calibration(), model, drop_labels=False))

        @torch.no_grad()
        def run_model() -> None:
            # peft's covariance hook takes one sequence at a time (it squeezes the batch axis)
            for b in data:
                for i in range(b["input_ids"].shape[0]):
                    keep = b["attention_mask"][i].bool()
                    model(input_ids=b["input_ids"][i : i + 1, keep], attention_mask=b["attention_mask"][i : i + 1, keep])

        was_training = model.training
        model.eval()
        preprocess_corda(model, self._config, run_model=run_model)
        model.train(was_training)

    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        if not hasattr(self, "_config"):
            raise RuntimeError("CorDA needs prepare_with_data before wrap")
        return peft.get_peft_model(model, self._config)
