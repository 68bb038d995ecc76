"""lm-eval on the adapted causal LM: the project's local task end to end on the tiny Llama, a
saved adapter folder scored like the in-memory model, and early config errors."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from peftbench.experiments.lm_eval_hook import PROJECT_TASKS, evaluate_adapter, run_lm_eval, validate_lm_eval
from peftbench.methods.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
LE = {"tasks": ["peftbench_arith"], "include_path": None, "limit": 6, "num_fewshot": 0, "batch_size": 8}


@pytest.fixture(scope="module")
def tiny():
    from peftbench.experiments.models import load_model, load_tokenizer

    mc = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny-llama.yaml"))
    tok = load_tokenizer(mc)
    return mc, tok, load_model(mc, "generation", None, torch.device("cpu"), {}, tok.pad_token_id)


def test_local_task_data_is_project_made_and_reproducible():
    spec = importlib.util.spec_from_file_location("peftbench_utils", PROJECT_TASKS / "peftbench_utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stored = [json.loads(x) for x in (PROJECT_TASKS / "peftbench_arith.jsonl").read_text().splitlines()]
    assert stored == mod.rows()
    for r in stored:  # the marked answer is the true result
        a, word, b = r["question"][len("What is "):-1].split()
        assert int(r["choices"][r["answer"]]) == {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[word]


def test_no_tasks_means_no_lm_eval(tiny):
    _, tok, model = tiny
    assert run_lm_eval(model, tok, {"lm_eval": {"tasks": []}}, torch.device("cpu")) is None
    assert run_lm_eval(model, tok, {}, torch.device("cpu")) is None


@pytest.mark.slow
def test_local_task_end_to_end_and_saved_adapter(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    mc, tok, base = tiny
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    cfg = {"lm_eval": LE, "precision": "fp32", "seed": 0}
    out = run_lm_eval(model, tok, cfg, torch.device("cpu"))
    res = out["results"]["peftbench_arith"]
    assert out["n_samples"]["peftbench_arith"] == {"original": 40, "effective": 6}
    assert 0.0 <= res["acc,none"] <= 1.0 and "acc_norm,none" in res
    json.dumps(out)  # goes into the run's JSON record as is
    model.save_pretrained(str(tmp_path / "adapter"))
    again = evaluate_adapter(mc, tmp_path / "adapter", cfg, "cpu")  # base reloaded + PeftModel.from_pretrained
    assert again["results"]["peftbench_arith"]["acc,none"] == res["acc,none"]
    assert again["results"]["peftbench_arith"]["acc_norm,none"] == res["acc_norm,none"]
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        evaluate_adapter(mc, tmp_path, cfg, "cpu")
    model.unload()  # leave the shared base model without LoRA layers


def test_validation_errors():
    llm = {"name": "tiny-llama", "kind": "causal_lm"}
    gen = {"name": "gsm8k", "kind": "generation"}
    with pytest.raises(ConfigError, match="needs a causal LM with its LM head"):
        validate_lm_eval({"lm_eval": LE, "model": {"name": "minilm", "kind": "classifier"}, "task": {"name": "synth", "kind": "classification"}})
    with pytest.raises(ConfigError, match="needs a causal LM with its LM head"):
        validate_lm_eval({"lm_eval": LE, "model": llm, "task": {"name": "sst2", "kind": "classification"}})
    with pytest.raises(ConfigError, match="include_path: /nope does not exist"):
        validate_lm_eval({"lm_eval": {**LE, "include_path": "/nope"}, "model": llm, "task": gen})
    with pytest.raises(ConfigError, match="limit must be"):
        validate_lm_eval({"lm_eval": {**LE, "limit": -2}, "model": llm, "task": gen})
    validate_lm_eval({"lm_eval": LE, "model": llm, "task": gen})  # a known local task passes


@pytest.mark.slow
def test_user_include_path(tmp_path, tiny):
    """A task YAML in the user's own folder (lm_eval.include_path) runs like the project's."""
    _, tok, model = tiny
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"q": f"{i} plus 1", "c": [str(i + 1), str(i + 5)], "a": 0}) + "\n" for i in range(4)))
    (tmp_path / "mine.yaml").write_text(
        "task: my_local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(tmp_path / "data.jsonl") +
        "\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}} ='\ndoc_to_choice: c\ndoc_to_target: a\n"
        "metric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n")
    le = {**LE, "tasks": ["my_local_mc"], "include_path": str(tmp_path), "limit": None}
    validate_lm_eval({"lm_eval": le, "model": {"kind": "causal_lm"}, "task": {"kind": "generation"}})
    out = run_lm_eval(model, tok, {"lm_eval": le, "precision": "bf16"}, "cpu")
    assert out["n_samples"]["my_local_mc"]["effective"] == 4 and out["settings"]["mixed_precision"] == "torch.bfloat16"


@pytest.mark.slow
def test_lm_eval_results_land_in_the_run_record(tmp_path):
    """A whole run: train LoRA on a GSM8K-format file, then lm-eval on the adapted model; the
    scores are in the run's JSON record."""
    from peftbench.experiments.run import execute, prepare
    from tests.conftest import compose

    rows = [{"question": f"What is {i} plus {i + 1}?", "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"} for i in range(12)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = compose(["model=tiny-llama", "task=gsm8k", f"task.data_files.train={tmp_path / 'train.jsonl'}",
                      f"task.data_files.test={tmp_path / 'test.jsonl'}", "task.max_eval_samples=2", "task.max_new_tokens=4",
                      "method=lora", "steps=2", "batch_size=2", "max_length=64", "precision=fp32", "progress=false",
                      "measure.latency=false", "measure.adapter_size=false", f"results_dir={tmp_path / 'r'}",
                      "lm_eval.tasks=[peftbench_arith]", "lm_eval.limit=4"])
    rec = execute(prepare(config))
    assert rec["status"] == "ok", rec.get("error")
    stored = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    res = stored["lm_eval"]["results"]["peftbench_arith"]
    assert 0.0 <= res["acc,none"] <= 1.0 and stored["lm_eval"]["n_samples"]["peftbench_arith"]["effective"] == 4
