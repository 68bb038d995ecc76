"""The method zoo: every zoo YAML trains on MiniLM and on the tiny Llama, merges where peft can,
refuses what it cannot do before loading, and the hooks (data pass, per-step) do their work."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from peftbench.experiments import meters
from peftbench.experiments.models import build_model_info
from peftbench.experiments.run import method_for
from peftbench.methods.base import ConfigError
from tests.conftest import compose
from peftbench.experiments.sweep.methods import methods_beyond, preset_methods
from tests.zoo_harness import build, logits, train_steps, trained_copy

ROOT = Path(__file__).resolve().parents[1]
METHOD_DIR = ROOT / "conf" / "method"
FAMILIES = {"reference", "lora", "init", "orthogonal", "vector", "adapter", "prompt", "quant", "other"}


def _yaml(name: str) -> dict:
    return yaml.safe_load((METHOD_DIR / f"{name}.yaml").read_text())


ZOO = methods_beyond("methods", "quant").split(",")  # what conf/sweep/zoo.yaml resolves to
LADDER = yaml.safe_load((ROOT / "conf" / "sweep" / "quant.yaml").read_text())["hydra"]["sweeper"]["params"]["method"].split(",")
# (method, model, task kind) pairs peft cannot do: refused up front, tested below
REFUSED = {("prefix_tuning", "minilm", "classification"), ("bitfit", "tiny-llama", "generation")}
CASES = [(m, model, kind) for m in sorted(set(ZOO + LADDER) - {"lora"})
         for model, kind in (("minilm", "classification"), ("tiny-llama", "generation"))
         if (m, model, kind) not in REFUSED]
QUANTISED = {"lora_bf16w", "lora_int8", "qlora_nf4_dq", "qlora_nf4", "qlora_fp4_dq", "qlora_fp4"}


@pytest.mark.slow
@pytest.mark.parametrize("name,model,kind", CASES, ids=[f"{m}-{mo}" for m, mo, _ in CASES])
def test_zoo_method_trains_and_merges(name, model, kind):
    method, _, net, source = build([f"method={name}", f"model={model}", *_fewer_calibration_batches(name)], kind)
    before = trained_copy(net)
    assert before, f"{name}: nothing trains"
    losses = train_steps(method, net, source, steps=2)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in net.named_parameters() if n in before and not torch.equal(before[n], p.detach())]
    assert changed, f"{name}: two optimizer steps changed no trainable parameter"
    if not method.can_merge:
        return
    unmerged = logits(net, source)
    if hasattr(net, "disable_adapter"):
        with net.disable_adapter():
            base = logits(net, source)
        assert (unmerged - base).abs().max() > 1e-7, f"{name}: the adapter does not change the outputs; the merge check would be vacuous"
    merged_model = method.merge(net)
    merged = logits(merged_model, source)
    # merging into bf16 or quantised weights rounds or re-quantises them: close, not equal
    tol = 0.2 if name in QUANTISED else 1e-4
    torch.testing.assert_close(merged, unmerged, atol=tol, rtol=tol)


def _fewer_calibration_batches(name: str) -> list[str]:
    # the data-pass inits take seconds per calibration batch; two are enough to test them
    return ["method.calibration_batches=2"] if "calibration_batches" in _yaml(name) else []


def _validate(overrides: list[str], kind: str) -> None:
    cfg = compose(overrides)
    method_for(cfg["method"]).validate(build_model_info(cfg["model"], kind, 3 if kind == "classification" else None))


@pytest.mark.parametrize("overrides,kind,words", [
    (["method=prefix_tuning"], "classification", "past_key_values"),
    (["method=bitfit", "model=tiny-llama"], "generation", "no biases"),
    (["method=bitfit", "model=tiny-llama"], "classification", "no biases"),
    (["method=lora_int8", "method.use_dora=true"], "classification", "DoRA on 8-bit"),
    (["method=adalora", "method.tinit_frac=0.5", "method.tfinal_frac=0.5"], "classification", r"tinit_frac \+ method.tfinal_frac"),
])
def test_refused_before_loading_with_a_reason(overrides, kind, words):
    with pytest.raises(ConfigError, match=words):
        _validate(overrides, kind)


def test_loftq_fits_the_quantisation_error():
    """Q + BA is closer to W than Q alone: the adapter starts at LoftQ's fit, not at zero."""
    from peftbench.methods.loftq import loftq_cpu

    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    q, a, b = loftq_cpu(w, rank=8, num_iter=2)
    assert a.shape == (8, 96) and b.shape == (64, 8)
    plain, fitted = (w - q).norm(), (w - q - b @ a).norm()
    assert 0 < fitted < 0.95 * plain, (float(plain), float(fitted))


def test_bf16_weights_refuse_fp32_precision():
    cfg = compose(["method=lora_bf16w"])
    method = method_for(cfg["method"])
    info = build_model_info(cfg["model"], "classification", 3)
    with pytest.raises(ConfigError, match="precision=bf16"):
        method.load_kwargs(torch.float32, info)
    assert method.load_kwargs(torch.bfloat16, info) == {"dtype": torch.bfloat16}


@pytest.mark.slow
def test_refusal_on_the_command_line_is_one_line(tmp_path, forked_cli):
    out = forked_cli.run(["run", "method=prefix_tuning", f"results_dir={tmp_path}"])
    assert out.returncode == 2
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftbench: error: method prefix_tuning cannot run on model minilm"), out.stderr
    assert not list(tmp_path.glob("*.json")), "a refused single run must not start"


@pytest.mark.slow
def test_adalora_on_step_prunes_the_rank_budget():
    """Without the per-step hook AdaLoRA keeps all init_r ranks; with it the budget ends at target_r."""
    method, _, net, source = build(["method=adalora", "model=tiny-llama", "method.total_step=10"], "generation")
    train_steps(method, net, source, steps=10, lr=1e-2)
    e = [p for n, p in net.named_parameters() if "lora_E" in n]
    kept = sum(int((p != 0).sum()) for p in e)
    assert kept <= 8 * len(e) < 12 * len(e), f"{kept} ranks kept of {12 * len(e)}; target {8 * len(e)}"


@pytest.mark.slow
def test_eva_redistributes_ranks_from_the_data_pass():
    """EVA sizes each layer's rank by the explained variance of its inputs on the calibration
    batches, within the budget r x layers: the ranks differ, their sum does not."""
    _, _, net, _ = build(["method=eva", *_fewer_calibration_batches("eva")], "classification")
    ranks = [p.shape[0] for n, p in net.named_parameters() if "lora_A" in n]
    assert len(ranks) == 12 and sum(ranks) == 8 * 12 and len(set(ranks)) > 1, ranks


def test_wrap_without_the_data_pass_fails_loudly():
    cfg = compose(["method=eva"])
    method = method_for(cfg["method"])
    with pytest.raises(RuntimeError, match="prepare_with_data"):
        method.wrap(torch.nn.Linear(2, 2), build_model_info(cfg["model"], "classification", 3))


@pytest.mark.slow
def test_hooks_reach_the_runner(run_small, monkeypatch):
    """experiments.run calls prepare_with_data once before wrap and on_step once per step."""
    from peftbench.methods.lora import LoRA

    calls = []
    monkeypatch.setattr(LoRA, "prepare_with_data", lambda self, model, info, batches: calls.append(("data", len(list(batches(2))))))
    monkeypatch.setattr(LoRA, "on_step", lambda self, model, step: calls.append(("step", step)))
    rec = run_small("method=lora", "steps=3", "batch_size=4")
    assert rec["status"] == "ok", rec.get("error")
    assert calls == [("data", 2), ("step", 0), ("step", 1), ("step", 2)]
    assert rec["timing"]["prepare_data_s"] >= 0


def test_train_loop_calls_the_step_hook_after_each_update():
    from contextlib import nullcontext

    from peftbench.experiments.meters import StepTimer
    from peftbench.experiments.train import train

    model = torch.nn.Linear(2, 2)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, input_ids, **_):
            return type("O", (), {"loss": self.lin(input_ids.float()).pow(2).mean()})()

    calls = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [{"input_ids": torch.ones(1, 2)} for _ in range(3)]
    train(M(), opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), batches, torch.device("cpu"), nullcontext, 0.0,
          StepTimer(torch.device("cpu")), lambda *a: None, lambda m, step: calls.append((step, model.weight.grad is not None)))
    assert calls == [(0, True), (1, True), (2, True)], "the hook runs once per step, while the step's gradients exist"


@pytest.mark.slow
def test_ladder_weight_bytes_fall_rung_by_rung():
    sizes = {}
    for rung in ("lora", "lora_bf16w", "lora_int8", "qlora_nf4", "qlora_nf4_dq"):
        _, _, net, _ = build([f"method={rung}"], "classification")
        sizes[rung] = meters.weight_bytes(net)
    # the embeddings (a third of MiniLM) stay unquantised: bf16 halves them too, so it beats int8
    assert sizes["lora"] > sizes["lora_int8"] > sizes["qlora_nf4"] > sizes["qlora_nf4_dq"], sizes
    assert sizes["lora"] > 1.9 * sizes["lora_bf16w"], sizes


@pytest.mark.slow
def test_int8_keeps_the_head_out_of_quantisation():
    import bitsandbytes as bnb

    _, _, net, _ = build(["method=lora_int8"], "classification")
    base = net.get_base_model()
    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in base.modules()) == 37
    heads = [m for n, m in base.named_modules() if n.split(".")[0] == "classifier"]
    assert heads and not any(isinstance(m, bnb.nn.Linear8bitLt) for m in heads)


@pytest.mark.parametrize("name", sorted(set(ZOO + LADDER) - {"lora", "loha"}))
def test_zoo_yaml_carries_report_metadata(name):
    meta = _yaml(name)["report"]
    assert {"family", "order", "color", "marker", "capacity_key", "role"} <= set(meta) <= {
        "family", "order", "color", "marker", "capacity_key", "role", "built_on"}
    if "peft_class" not in _yaml(name):  # what the zoo table's "peft class" column shows
        assert isinstance(meta.get("built_on"), str) and meta["built_on"], f"{name}: add report.built_on"
    assert meta["family"] in FAMILIES and isinstance(meta["order"], int) and meta["role"] is None
    if meta["capacity_key"]:  # the capacity key points at a real setting of the method
        node = _yaml(name)
        for part in meta["capacity_key"].split("."):
            node = node[part]
        assert isinstance(node, int)


def test_every_method_yaml_is_in_a_sweep_and_a_new_one_joins_the_zoo_by_itself(tmp_path, monkeypatch):
    names = {p.stem for p in METHOD_DIR.glob("*.yaml")}
    assert names == set(ZOO) | set(LADDER) | set(preset_methods("methods"))
    from peftbench.experiments.sweep import methods as sweep_methods

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf" / "sweep", conf / "sweep")
    shutil.copytree(METHOD_DIR, conf / "method")
    (conf / "method" / "my_new_method.yaml").write_text("name: my_new_method\nimpl: peft_config\npeft_class: LoHaConfig\n"
                                                        "report: {family: lora, order: 999}\n")
    monkeypatch.setattr(sweep_methods, "CONF", conf)
    sweep_methods.methods_beyond.cache_clear()
    try:
        assert "my_new_method" in sweep_methods.methods_beyond("methods", "quant").split(",")
    finally:
        sweep_methods.methods_beyond.cache_clear()


@pytest.mark.parametrize("overrides", [["method=prompt_tuning"], ["method=p_tuning", "model=tiny-llama", "task=procedural",
                                                                  "max_length=64", "task.n_validation=4", "task.n_test=4"]],
                         ids=["prompt_tuning-minilm", "p_tuning-tiny-llama"])
@pytest.mark.slow
def test_prompt_methods_run_whole_with_forgetting(run_small, overrides):
    """Prompt methods prepend virtual tokens to the model's outputs; a whole run (base score,
    forgetting before and after, evaluation) must still compare the text's own positions."""
    rec = run_small(*overrides, "steps=2", "batch_size=4", "torch_threads=1")
    assert rec["status"] == "ok", rec.get("error")
    f = rec["forgetting"]
    moved = f.get("kl_base_tuned_nats", f[f["primary"]])  # CE can fall on a random tiny model; KL cannot be 0 once it moved
    assert moved > 0
