"""Serving costs: mixed adapter batches compute what each adapter computes alone, a bf16 merge
moves the logits more than an fp32 merge, whole runs record every part or why it is absent,
bad settings are refused up front, and the serving claims get verdicts from given records."""
from __future__ import annotations

import copy
import re
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from peftbench.experiments.meters import serving
from peftbench.methods.base import ConfigError

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

TINY = ["measure.serving.enabled=true", "model=tiny-llama", "precision=fp32", "steps=2", "task.n_train=32", "task.n_validation=8", "task.n_test=16",
        "measure.serving.repeats=3", "measure.serving.warmup=0", "measure.serving.load_repeats=2",
        "measure.serving.swap_repeats=5", "measure.serving.adapters=[1,2,4]", "measure.serving.batch=4",
        "measure.latency_length=16"]


@pytest.fixture(scope="module")
def tiny_lora():
    """A tiny-llama classifier with two different, non-zero LoRA adapters loaded as a0 and a1."""
    import peft

    from peftbench.experiments.models import build_model_info, load_model, load_tokenizer
    from tests.conftest import compose

    cfg = compose(["model=tiny-llama", "precision=fp32"])
    tok = load_tokenizer(cfg["model"])
    base = load_model(cfg["model"], "classification", 2, torch.device("cpu"), {}, tok.pad_token_id).eval()
    info = build_model_info(cfg["model"], "classification", num_labels=2)
    targets = [n for n in info.linear_names if n.endswith(("q_proj", "v_proj"))]
    model = None
    for i, name in enumerate(["a0", "a1"]):
        torch.manual_seed(100 + i)
        lcfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="SEQ_CLS",
                               modules_to_save=["score"])
        model = peft.get_peft_model(copy.deepcopy(base), lcfg, adapter_name=name) if model is None else model
        if i:
            model.add_adapter(name, lcfg)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(3, 200, (4, 12), generator=gen), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    return model, batch


def test_mixed_batch_rows_match_each_adapter_alone(tiny_lora):
    model, batch = tiny_lora
    names = serving.row_adapters(["a0", "a1"], 2, 4)
    with torch.no_grad():
        mixed = serving.MixedBatch(model, names)(**batch)
        naive = serving.AdapterByAdapter(model, names)(**batch)
        alone = {}
        for name in ("a0", "a1"):
            model.set_adapter(name)
            alone[name] = model(**batch).logits
    expected = torch.stack([alone[n][i] for i, n in enumerate(names)])
    assert not torch.allclose(alone["a0"], alone["a1"], atol=1e-3)  # the adapters really differ
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(naive, expected, atol=1e-5, rtol=1e-4)


def test_bf16_merge_moves_logits_more_than_fp32_merge(tiny_lora):
    model, batch = tiny_lora
    model.set_adapter("a0")
    cpu = torch.device("cpu")
    unmerged = serving.logits_of(model, batch, cpu, nullcontext)
    diffs = {k: (serving.logits_of(serving.merged_in(model, d), batch, cpu, nullcontext) - unmerged).abs().max().item()
             for k, d in serving.MERGE_DTYPES.items()}
    assert diffs["fp32"] < 1e-4 < diffs["bf16"], diffs
    assert serving.logits_of(model, batch, cpu, nullcontext).equal(unmerged)  # the trained model stays unmerged


@pytest.mark.slow
def test_lora_run_records_every_serving_part(run_small):
    rec = run_small("method=lora", *TINY)
    sv = rec["serving"]
    assert rec["status"] == "ok", rec.get("error")
    assert sv["load_ms"] > 0 and sv["load_another_ms"] > 0 and sv["swap_ms"] > 0
    assert sv["latency_b1_ms_base"] > 0 and "latency_b1_overhead_merged_frac" in sv
    assert all(sv[f"{kind}_ms_k{k}"] > 0 for kind in ("mixed", "naive") for k in (1, 2, 4)) and "mixed_ms_k8" not in sv
    assert sv["mixed_samples_per_s_k4"] == pytest.approx(4 / sv["mixed_ms_k4"] * 1e3)
    assert "mixed_second_adapter_overhead_frac" in sv and "merged_ms_mixed_batch" in sv
    # fp32 merge of the same adapter: the logits barely move, and the test metric is measured for each variant
    assert sv["merged_fp32_max_abs_logit_diff"] < 1e-3 and 0 <= sv["primary_merged_bf16"] <= 1
    assert set(sv["skipped"]) == {"generation"} and "generation task" in sv["skipped"]["generation"]
    assert set(sv["measure_s"]) == {"batch1", "load", "adapters", "merge_precision", "generation"}


@pytest.mark.slow
def test_bottleneck_and_full_ft_record_why_parts_are_absent(run_small):
    rec = run_small("method=houlsby", *TINY, "measure.serving.merge_eval=false")
    sv = rec["serving"]
    assert sv["load_ms"] > 0 and sv["latency_b1_ms_unmerged"] > 0 and "latency_b1_ms_merged" not in sv
    assert "hot-swap" in sv["skipped"]["adapters"] and "cannot merge" in sv["skipped"]["merge_precision"]
    ft = run_small("method=full_ft", *TINY, "measure.serving.merge_eval=false")["serving"]
    assert "no adapter" in ft["skipped"]["load"] and "swap_ms" not in ft and ft["latency_b1_ms_base"] > 0


@pytest.mark.slow
def test_generation_task_times_first_token_and_decoding(run_small):
    rec = run_small("method=lora", "task=procedural", *TINY, "task.n_test=4", "measure.serving.merge_eval=false",
                    "measure.serving.generation_tokens=4", "measure.serving.generation_repeats=2", "measure.serving.adapters=[1,2]")
    sv = rec["serving"]
    assert rec["status"] == "ok", rec.get("error")
    for g in ("base", "unmerged", "merged"):
        assert sv[f"gen_ttft_ms_{g}"] > 0 and sv[f"gen_tokens_per_s_{g}"] > 0
    assert sv["gen_new_tokens"] == 4 and "generation" not in sv["skipped"]


@pytest.mark.slow
def test_serving_follows_latency_unless_set(run_small):
    from tests.conftest import compose

    assert [compose([f"measure.latency={v}"])["measure"]["serving"]["enabled"] for v in ("true", "false")] == [True, False]
    assert compose(["measure.latency=false", "measure.serving.enabled=true"])["measure"]["serving"]["enabled"] is True
    assert run_small("method=lora", *TINY[1:])["serving"] is None  # conftest FAST switches it off


@pytest.mark.parametrize("overrides, words", [
    ({"adapters": [1, 2, 8], "batch": 4}, "measure.serving.batch>=8"),
    ({"adapters": [3]}, "distinct values among [1, 2, 4, 8, 16]"),
])
def test_bad_adapter_counts_are_refused_before_loading(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        serving.validate({"measure": {"serving": overrides}})


def _with_serving(rec: dict, **figures: float) -> dict:
    rec["serving"] = {"skipped": {}, **figures}
    return rec


def _verdict(claim_file: str, records: list[dict], tmp_path: Path):
    from peftbench.analysis import claims
    from peftbench.analysis.load import load_results

    ok = load_results([fx.write_all(tmp_path, records, broken=False)]).ok
    claim = claims.load_claims([claims.CLAIMS_DIR / claim_file])[0][1]
    # these CPU fixtures test the noise-bound reading, not the claim's regime (GPU serving, fp32 training)
    return claims.evaluate_claim({k: v for k, v in claim.items() if k != "regime"}, ok)


@pytest.mark.parametrize("value, noise, verdict", [
    (0.17, 0.01, "holds"),    # inside 15-20%, and so is its noise bound
    (0.40, 0.01, "fails"),    # far outside, tight bound
    (0.12, 0.04, "cannot tell"),  # outside, but its noise bound reaches into the range
    (0.40, 0.50, "not applicable"),  # noise larger than the claimed effect: left out
])
def test_range_claim_verdict_uses_the_noise_bound(tmp_path, value, noise, verdict):
    recs = [_with_serving(fx.record("houlsby", seed=s, r=None, targets=None, can_merge=False),
                          latency_b1_overhead_unmerged_frac=value, latency_b1_noise_frac=noise) for s in (0, 1)]
    res = _verdict("serving_bottleneck_latency_15_20.yaml", recs, tmp_path)
    assert res.verdict == verdict, res
    assert f"{noise:g}" in (res.conditions[0].evidence[0].text if res.conditions[0].evidence else res.conditions[0].note)


def test_bf16_merge_claim_uses_the_spread_over_seeds(tmp_path):
    # drops of 0.5, 0.6 and 0.9 points: mean inside 0.5-0.8, but the t-interval over seeds reaches past it
    recs = [_with_serving(fx.record("lora", seed=s), primary_drop_bf16_vs_fp32=d) for s, d in zip((0, 1, 2), (0.005, 0.006, 0.009))]
    res = _verdict("serving_bf16_merge_costs_points.yaml", recs, tmp_path)
    assert res.verdict == "cannot tell" and "t-CI95 over seeds ±0.005" in res.conditions[0].evidence[0].text
    tight = [_with_serving(fx.record("lora", seed=s), primary_drop_bf16_vs_fp32=d) for s, d in zip((0, 1, 2), (0.0064, 0.0065, 0.0066))]
    assert _verdict("serving_bf16_merge_costs_points.yaml", tight, tmp_path / "t").verdict == "holds"
    # spread so wide (0.2 to 1.5 points) that the interval is larger than the claimed effect: left out
    wide = [_with_serving(fx.record("lora", seed=s), primary_drop_bf16_vs_fp32=d) for s, d in zip((0, 1, 2), (0.002, 0.004, 0.015))]
    assert _verdict("serving_bf16_merge_costs_points.yaml", wide, tmp_path / "w").verdict == "not applicable"
    same = [_with_serving(fx.record("lora", seed=s), primary_drop_bf16_vs_fp32=0.0) for s in (0, 1, 2)]
    assert _verdict("serving_bf16_merge_costs_points.yaml", same, tmp_path / "b").verdict == "fails"


@pytest.mark.slow
def test_report_has_a_serving_table_and_figure(tmp_path):
    from peftbench.analysis.report import build

    recs = [_with_serving(fx.record("lora", seed=0), latency_b1_overhead_unmerged_frac=0.3, latency_b1_overhead_merged_frac=0.0,
                          latency_b1_noise_frac=0.02, mixed_ms_k1=10.0, mixed_ms_k2=10.4, naive_ms_k1=10.0, naive_ms_k2=11.5,
                          merged_ms_mixed_batch=9.0, load_ms=40.0, swap_ms=0.05, mixed_second_adapter_overhead_frac=0.04,
                          mixed_noise_frac=0.01),
            _with_serving(fx.record("houlsby", seed=0, r=None, targets=None, can_merge=False), latency_b1_overhead_unmerged_frac=0.18,
                          latency_b1_noise_frac=0.02, load_ms=30.0)]
    recs[1]["serving"]["skipped"] = {"adapters": "the method declares no hot-swap"}
    out = tmp_path / "report"
    made = build([str(fx.write_all(tmp_path / "res", recs, broken=False))], out, fx.CONF / "claims")
    md = (out / "tables.md").read_text()
    section = md[md.index("### minilm / synth: serving costs"):]
    assert "| 2nd adapter, mixed (%) |" in section and "+4.0 ± " in section
    assert "houlsby: adapters: the method declares no hot-swap." in section
    assert "TTFT" not in section.split("\n\n")[1]  # columns nobody measured are left out
    fig = next(f for f in made["figures"] if f.name.endswith("__serving"))
    assert fig.files and (out / fig.files[0]).stat().st_size > 0
    assert "serving.mixed_ms_k2" in (out / "tables" / "minilm__synth.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (["measure.serving.repeats=0"], "measure.serving.repeats must be a positive integer"),
    (["measure.serving.enabled=maybe"], "measure.serving.enabled must be true or false"),
    (["measure.serving.adapters=[1,16]"], "set measure.serving.batch>=16"),
])
def test_serving_keys_are_checked_by_prepare(args, message):
    from peftbench.experiments.run import prepare
    from tests.conftest import compose

    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare(compose(args))


@pytest.mark.slow
def test_merges_are_compared_in_fp32_so_only_their_rounding_differs(tmp_path):
    """Under bf16 autocast the unmerged model rounds W and the adapter's path apart while a merged
    one rounds W + delta once: that compute noise made an fp32 merge look worse than a bf16 one. With
    fp32 weights the comparison computes in fp32: an fp32 merge is then exact, a bf16 merge is not."""
    from peftbench.experiments.run import adapt, autocast_for, load_for, prepare
    from tests.conftest import compose

    plan = prepare(compose(["model=tiny-llama", "task=procedural", "method=lora", "precision=bf16", "task.n_train=16",
                            "task.n_validation=4", "task.n_test=4", f"results_dir={tmp_path}"]))
    _, task, model = load_for(plan)
    model = adapt(plan, model, task)
    torch.manual_seed(0)
    for _, layer in serving.tuner_layers(model):  # a trained adapter: B away from its zero start
        for k in layer.lora_B:
            torch.nn.init.normal_(layer.lora_B[k].weight, std=0.05)
    bf16 = autocast_for(torch.device("cpu"), "bf16")
    compare = serving.merge_compare_autocast(model, bf16)
    assert compare is not bf16
    batch = task.fixed_batch(4, 16)
    ref = serving.logits_of(model, batch, torch.device("cpu"), compare)
    diff = {dt: (serving.logits_of(serving.merged_in(model, dt), batch, torch.device("cpu"), compare) - ref).abs().max().item()
            for dt in (torch.float32, torch.bfloat16)}
    assert diff[torch.float32] < 1e-4 < diff[torch.bfloat16]
    # weights stored in bf16 cannot compute in fp32 as they are, nor does a quantised base (integer
    # weights, computed in their compute dtype): the run's own autocast
    assert serving.merge_compare_autocast(copy.deepcopy(model).to(torch.bfloat16), bf16) is bf16
    quantised = torch.nn.Linear(2, 2)
    quantised.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.uint8), requires_grad=False)
    assert serving.merge_compare_autocast(quantised, bf16) is bf16


def test_the_estimators_serving_default_is_servings_own():
    from peftbench.experiments import estimate

    assert estimate.SERVING_ENABLED_DEFAULT == serving.DEFAULTS["enabled"]


def test_dora_declares_what_peft_refuses_one_adapter_per_row():
    """peft refuses `adapter_names=` when DoRA is enabled: DoRA declares no mixed batch, so its
    serving record says so in words and still times adapter loads and hot-swaps (were the
    refusal to go, this test says to declare it again)."""
    import peft
    from torch import nn

    from peftbench.experiments.run import method_for
    from tests.conftest import compose

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x)

    model = peft.get_peft_model(Tiny(), peft.LoraConfig(r=2, target_modules=["lin"], use_dora=True)).eval()
    with pytest.raises(ValueError, match="DoRA"):
        model(torch.zeros(2, 4), adapter_names=["default", "default"])
    assert method_for(compose(["method=dora"])["method"]).serving == {"load": True, "hot_swap": True, "mixed_batch": False}
    assert method_for(compose(["method=lora"])["method"]).serving["mixed_batch"]
