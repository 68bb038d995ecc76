"""Full fine-tuning: the reference."""
from pathlib import Path

from safetensors.torch import save_model
from torch import nn

from peftbench.methods.base import Method, ModelInfo
from peftbench.methods.registry import register


@register("full_ft")
class FullFineTuning(Method):
    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_model(model, str(path / "model.safetensors"))
