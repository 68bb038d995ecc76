"""QLoRA on CPU with bitsandbytes 0.50: the two traps, handled and tested."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from peftbench.experiments.models import build_model_info, load_model
from peftbench.methods import get
from peftbench.methods.qlora import disable_cpu_packed_4bit

bnb = pytest.importorskip("bitsandbytes")
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}
BATCH = {
    "input_ids": torch.randint(1000, 5000, (4, 16), generator=torch.Generator().manual_seed(2)),
    "attention_mask": torch.ones(4, 16, dtype=torch.long),
    "labels": torch.tensor([0, 1, 2, 1]),
}


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _qlora_model(fix: bool = True):
    from tests.conftest import compose

    cfg = compose(["method=qlora", "method.dropout=0.0"])
    info = build_model_info(cfg["model"], "classification", 3)
    method = get("qlora")(cfg["method"])
    torch.manual_seed(0)
    extra = {**method.load_kwargs(torch.float32, info), **NO_DROPOUT}
    model = load_model(cfg["model"], "classification", 3, torch.device("cpu"), extra, 0)
    if fix:
        method.after_load(model)
    model = method.wrap(model, info)
    with torch.no_grad():  # non-zero B so that A gets gradients too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
    return model


def _dequantised_copy(model: nn.Module) -> nn.Module:
    """The same model with every 4-bit layer replaced by an fp32 Linear holding its dequantised weight."""
    ref = copy.deepcopy(model)
    for name, module in list(ref.named_modules()):
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(weight)
                if module.bias is not None:
                    linear.bias.copy_(module.bias.float())
            linear.requires_grad_(False)
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent), child, linear)
    return ref


def _lora_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    model(**BATCH).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}


def _eval_pass(model: nn.Module) -> None:
    model.eval()
    with torch.no_grad():
        model(**{k: v for k, v in BATCH.items() if k != "labels"})


@pytest.mark.slow
def test_head_stays_out_of_quantisation():
    model = _qlora_model()
    base = model.get_base_model()
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    assert n4 == 37  # 6 layers x 6 linears + pooler
    heads = [m for n, m in base.named_modules() if n.split(".")[0] == "classifier"]
    assert heads and not any(isinstance(m, bnb.nn.Linear4bit) for m in heads)
    assert any(type(m) is nn.Linear for m in heads)
    assert torch.isfinite(model(**BATCH).loss)


@pytest.mark.slow
def test_lora_gradients_match_dequantised_reference_after_eval_pass():
    model = _qlora_model(fix=True)
    reference = _dequantised_copy(model)  # built before any forward: weights in their plain 4-bit layout
    _eval_pass(model)  # the pass that would switch bitsandbytes to its packed, backward-less kernel
    got, want = _lora_grads(model), _lora_grads(reference)
    assert set(got) == set(want) and len(got) == 24
    for name in want:
        assert want[name].abs().max() > 0, f"{name}: reference gradient is zero, the check would be vacuous"
        torch.testing.assert_close(got[name], want[name], rtol=2e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.slow
@pytest.mark.skipif(not _has_avx512_bf16(), reason="the packed-kernel trap exists only on CPUs with AVX512-BF16")
def test_without_the_fix_gradients_are_wrong_or_the_step_fails():
    """Shows that the test above can fail: the trap is real on this CPU."""
    model = _qlora_model(fix=False)
    reference = _dequantised_copy(model)
    _eval_pass(model)
    want = _lora_grads(reference)
    try:
        got = _lora_grads(model)
    except Exception:
        return  # the step crashes: the trap is there
    worst = max(((got[n] - want[n]).abs().max() / want[n].abs().max()).item() for n in want)
    assert worst > 1e-2, "without the fix the gradients were right: the trap may be gone in this bitsandbytes"


@pytest.mark.slow
def test_disable_cpu_packed_4bit_counts_layers():
    model = _qlora_model(fix=False)
    assert disable_cpu_packed_4bit(model) == 37
    assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
