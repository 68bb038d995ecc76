"""Adding a method takes one file in methods/ and one YAML in conf/method/: nothing else.

The test plays the user: it registers a new method (BitFit: only biases and the head train)
from inside the test, puts its YAML on the Hydra search path, and runs it end to end.
"""
from pathlib import Path

import pytest

from torch import nn

from peftbench.methods import available, register
from peftbench.methods.base import Method, ModelInfo, unfreeze_heads


@register("bitfit_test")
class BitFit(Method):
    def wrap(self, model: nn.Module, info: ModelInfo) -> nn.Module:
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
        unfreeze_heads(model, info)
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        path.mkdir(parents=True)
        (path / "biases.txt").write_text("\n".join(n for n, p in model.named_parameters() if p.requires_grad))


@pytest.mark.slow
def test_new_method_registers_and_runs(run_small, tmp_path):
    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "bitfit_test.yaml").write_text("name: bitfit_test\nlr: 5.0e-3\n")
    assert "bitfit_test" in available()
    rec = run_small("method=bitfit_test", "steps=12", "precision=fp32", searchpath=[f"file://{tmp_path / 'conf'}"])
    assert rec["status"] == "ok", rec.get("error")
    assert rec["method"] == "bitfit_test"
    assert 384 * 3 + 3 < rec["params"]["trainable"] < 100_000  # biases + head, far below full
    assert sum(rec["loss_curve"][-3:]) < sum(rec["loss_curve"][:3])
