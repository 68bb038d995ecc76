"""merge_and_unload gives the same outputs as the unmerged adapter (LoRA, DoRA, rsLoRA)."""
import pytest
import torch

from peftbench.experiments.models import build_model_info, load_model
from peftbench.methods import get


def _tiny_batch():
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(1000, 5000, (4, 16), generator=g), "attention_mask": torch.ones(4, 16, dtype=torch.long)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lora", "dora", "rslora"])
def test_merge_matches_unmerged(name):
    from tests.conftest import compose

    cfg = compose([f"method={name}", "method.target_modules=all_linear", "method.dropout=0.0"])
    info = build_model_info(cfg["model"], "classification", 3)
    method = get(name)(cfg["method"])
    torch.manual_seed(0)
    model = method.wrap(load_model(cfg["model"], "classification", 3, torch.device("cpu"), {}, 0), info)
    with torch.no_grad():  # B starts at zero: make the adapter do something
        for n, p in model.named_parameters():
            if "lora_B" in n or "lora_magnitude" in n:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    batch = _tiny_batch()
    with torch.no_grad():
        unmerged = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
        merged_model = method.merge(model)
        merged = merged_model(**batch).logits
    assert not any("lora" in n for n, _ in merged_model.named_modules()), "adapter layers left after merge"
    assert (unmerged - base).abs().max() > 1e-2, "the adapter must change the outputs for the test to mean anything"
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
