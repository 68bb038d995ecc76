"""Bottleneck adapters: zero-init identity, save/load, honest about merging."""
import pytest
import torch

from peftbench.experiments.models import build_model_info, load_model
from peftbench.methods import get
from peftbench.methods.bottleneck import AdaptedLinear, BottleneckMethod


def _load(name: str, *overrides: str):
    from tests.conftest import compose

    cfg = compose([f"method={name}", *overrides])
    info = build_model_info(cfg["model"], "classification", 3)
    torch.manual_seed(0)
    model = load_model(cfg["model"], "classification", 3, torch.device("cpu"), {}, 0)
    return cfg, info, get(name)(cfg["method"]), model


BATCH = {"input_ids": torch.randint(1000, 5000, (3, 12), generator=torch.Generator().manual_seed(1)), "attention_mask": torch.ones(3, 12, dtype=torch.long)}


@pytest.mark.slow
@pytest.mark.parametrize("name,sites", [("houlsby", 12), ("pfeiffer", 6)])
def test_zero_init_is_identity(name, sites):
    _, info, method, model = _load(name)
    model.eval()
    with torch.no_grad():
        before = model(**BATCH).logits.clone()
        wrapped = method.wrap(model, info)
        after = wrapped(**BATCH).logits
    assert sum(isinstance(m, AdaptedLinear) for m in wrapped.modules()) == sites
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_bottleneck_size_from_reduction_factor_and_param_count():
    _, info, method, model = _load("houlsby", "method.reduction_factor=16")
    assert method.bottleneck_size(info) == 24
    model = method.wrap(model, info)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_site = 384 * 24 + 24 + 24 * 384 + 384
    assert trainable == 12 * per_site + 384 * 3 + 3


@pytest.mark.slow
def test_save_and_load_round_trip(tmp_path):
    _, info, method, model = _load("houlsby")
    model = method.wrap(model, info)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    with torch.no_grad():
        expected = model(**BATCH).logits
    method.save(model, tmp_path / "adapter")

    _, info2, method2, fresh = _load("houlsby")
    fresh = method2.wrap(fresh, info2)
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**BATCH).logits, expected)
        BottleneckMethod.load(fresh, tmp_path / "adapter")
        torch.testing.assert_close(fresh(**BATCH).logits, expected)


def test_cannot_merge_and_says_so():
    _, info, method, model = _load("pfeiffer")
    assert method.can_merge is False
    with pytest.raises(NotImplementedError, match="cannot be merged"):
        method.merge(method.wrap(model, info))
