"""Bad input: one clear line, non-zero exit, before any model is loaded."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from methods.base import ConfigError
from experiments.run import prepare
from tests.conftest import ROOT, compose

CASES = [
    (["method=nosuch"], "unknown method 'nosuch'"),
    (["model=nosuch"], "unknown model 'nosuch'"),
    (["task=nosuch"], "unknown task 'nosuch'"),
    (["method=lora", "method.r=0"], "method.r must be a positive integer"),
    (["method=dora", "method.r=-4"], "method.r must be a positive integer"),
    (["method=lora", "method.target_modules=[nosuch_proj]"], "match no layer"),
    (["method=lora", "method.target_modules=nosuch_preset"], "unknown target preset"),
    (["method=houlsby", "method.reduction_factor=1000"], "bottleneck size comes out as 0"),
    (["method=lora", "method.target_modules=query"], "available: attention.output.dense"),
    (["method=loha", "method.peft_kwargs.r=0"], "method.peft_kwargs.r must be a positive integer"),
    (["model.dtype=bf16", "precision=fp32"], "precision=fp32 but model minilm loads bf16 weights"),
    (["method=loha", "method.target_modules=[nosuch_proj]"], "target modules ['nosuch_proj'] match no layer"),
    (["device=meta"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["steps=0"], "steps must be a positive integer"),
    (["steps=-5"], "steps must be a positive integer"),
    (["task=procedural"], "task procedural is generative and needs a causal LM; model minilm is a classifier"),
    (["forgetting.data_files=/nonexistent/probe.txt"], "forgetting.data_files: file /nonexistent/probe.txt does not exist"),
    (["task.metrics=[{name:accuracy,direction:max},{name:macro_f1,direction:max}]"], "0 metrics are marked primary"),
    (["task.metrics=[{name:accuracy,primary:true},{name:bleu,primary:true}]"], "does not compute ['bleu']"),
    (["model=smollm2-135m", "task=procedural", "method=linear_probe"], "method linear_probe trains a fresh task head only"),
]


def _cli(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "experiments.cli", "run", *args, f"results_dir={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,message", CASES)
def test_cli_one_line_and_exit_code(args, message, tmp_path):
    proc = _cli(args, tmp_path)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("peftbench: error:") and message in lines[0]
    assert not list(Path(tmp_path).glob("*.json")), "a bad config must not leave a result"


@pytest.mark.parametrize("args,message", CASES[3:])
def test_validation_rejects_before_loading(args, message, monkeypatch):
    import transformers

    def no_loading(*a, **k):
        pytest.fail("weights or a tokenizer were about to be loaded")

    for cls in (transformers.AutoModelForSequenceClassification, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", no_loading)
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare(compose(args))


def test_unmatched_targets_list_available_names():
    with pytest.raises(ConfigError) as err:
        prepare(compose(["method=lora", "method.target_modules=[nosuch_proj]"]))
    text = str(err.value)
    for name in ("attention.self.query", "attention.self.value", "intermediate.dense", "attn_qv", "all_linear"):
        assert name in text
    with pytest.raises(ConfigError) as err:  # a method built from a peft config says the same, not "peft_kwargs"
        prepare(compose(["method=loha", "method.target_modules=[nosuch_proj]"]))
    assert str(err.value).startswith("target modules ['nosuch_proj'] match no layer")


def test_failed_run_inside_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", "-m", "model=tiny-llama", "method=lora", "method.r=0,2",
         "steps=2", "measure.latency=false", "task.n_train=32", "task.n_validation=8", "task.n_test=8",
         f"results_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    records = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    by_status = sorted((r["config"]["method"]["r"], r["status"]) for r in records)
    assert by_status == [(0, "failed"), (2, "ok")]
    failed = next(r for r in records if r["status"] == "failed")
    assert "method.r must be a positive integer" in failed["error"]


@pytest.mark.parametrize("error,code,line", [
    ("ConfigError: task.test_file (t.csv): label 'c' never appears", 2, "peftbench: error: task.test_file (t.csv): label 'c' never appears"),
    ("RuntimeError: boom", 1, "peftbench: run failed: RuntimeError: boom (traceback in"),
])
def test_a_failed_single_run_exits_non_zero(error, code, line, tmp_path, capsys):
    """Bad data found while reading it exits 2 like any bad input; a crash exits 1. Either way
    the failed record was written first."""
    from experiments.app import exit_failed

    rec = {"run_id": "r", "error": error, "traceback": "Traceback ...", "config": {"results_dir": str(tmp_path)}}
    with pytest.raises(SystemExit) as e:
        exit_failed(rec)
    assert e.value.code == code and capsys.readouterr().err.startswith(line)
