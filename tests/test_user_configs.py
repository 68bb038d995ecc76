"""A user's own method YAML, kept outside the package and found the way Hydra finds configs
(--config-dir, hydra.searchpath), runs end to end and reaches the report without any edit to
conf/ or analysis/."""
from __future__ import annotations

import pytest

import json
import os
from pathlib import Path

from peftbench.hydra_run import check_group_choices

ROOT = Path(__file__).resolve().parents[1]
MY_METHOD = """name: my_lora
impl: lora
lr: 2.0e-3
r: 4
alpha: 8
dropout: 0.0
target_modules: attn_qv
report: {family: lora, order: 25, color: "#00aa00", marker: "d", capacity_key: r, role: null}
"""


def user_conf(tmp_path: Path) -> Path:
    (tmp_path / "mine" / "method").mkdir(parents=True)
    (tmp_path / "mine" / "method" / "my_lora.yaml").write_text(MY_METHOD)
    return tmp_path / "mine"


def test_name_check_sees_the_users_config_folders(tmp_path):
    mine = user_conf(tmp_path)
    assert "unknown method 'my_lora'" in check_group_choices(["method=my_lora"])
    assert check_group_choices(["method=my_lora"], ["--config-dir", str(mine), "method=my_lora"]) is None
    assert check_group_choices(["method=my_lora", f"hydra.searchpath=[file://{mine}]"]) is None
    # still one line for a real typo, naming the user's methods beside the package's
    problem = check_group_choices(["method=my_lroa"], ["--config-dir", str(mine), "method=my_lroa"])
    assert "unknown method 'my_lroa'" in problem and "my_lora" in problem and "lora" in problem


@pytest.mark.slow
def test_a_method_yaml_outside_the_package_runs_end_to_end(tmp_path, forked_cli):
    mine = user_conf(tmp_path)
    res = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    out = forked_cli.run(["run", "--config-dir", str(mine), "method=my_lora", "model=tiny-llama", "steps=2",
                          "measure.latency=false", "measure.adapter_size=false", "progress=false", "task.n_train=32",
                          "task.n_validation=16", "task.n_test=16", f"results_dir={res}"], cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [path] = res.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok" and rec["method"] == "my_lora" and rec["config"]["method"]["report"]["order"] == 25
    from peftbench.analysis.report import build

    made = build([str(res)], tmp_path / "report", tmp_path / "no_claims")
    row = made["agg"].iloc[0]
    assert (row["method"], row["capacity"], row["color"]) == ("my_lora", "r=4", "#00aa00")
