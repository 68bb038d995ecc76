"""logger=wandb, offline: config, per-step loss, final metrics and cost land in the offline run."""
from __future__ import annotations

import pytest

import json
import os
from pathlib import Path

from peftbench.experiments.tracking import read_offline_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wandb_offline_logs_config_loss_metrics_and_cost(tmp_path, forked_cli):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false"}
    res = tmp_path / "results"
    out = forked_cli.run(["run", "method=lora", "model=tiny-llama", "steps=3", "measure.latency=false", "task.n_train=64",
                          "task.n_validation=16", "task.n_test=16", "logger=wandb", "logger.tags=[t1]", f"results_dir={res}"],
                         env=env, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [result] = res.glob("*.json")
    rec = json.loads(result.read_text())
    [run_dir] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    assert run["name"] == rec["run_id"]
    assert {"t1", "lora", "tiny-llama", "protocol:method_default_lr"} <= set(run["tags"])
    cfg = {k: (v["value"] if isinstance(v, dict) and set(v) == {"value"} else v) for k, v in run["config"].items()}
    assert cfg["method"]["name"] == "lora" and cfg["steps"] == 3 and cfg["run_id"] == rec["run_id"]
    losses = [h["train/loss"] for h in run["history"] if "train/loss" in h]
    assert losses == rec["loss_curve"]
    s = run["summary"]
    # W&B keys are the record paths, the same names the report, CSV and claims use
    assert s["metrics.test.accuracy"] == rec["metrics"]["test"]["accuracy"]
    assert s["cost.step_time_ms_median"] == rec["cost"]["step_time_ms_median"]
    assert s["params.trainable"] == rec["params"]["trainable"] and s["status"] == "ok"
    # off by default: the default config composes logger=none, which creates no tracker
    from peftbench.experiments.tracking import Tracker
    from tests.conftest import compose

    default = compose([])
    assert default["logger"]["name"] == "none" and Tracker.from_config(default) is None


@pytest.mark.slow
def test_wandb_tracks_the_lr_search_result_beside_its_trials(tmp_path, forked_cli):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false"}
    res = tmp_path / "results"
    out = forked_cli.run(["run", "method=lora", "model=tiny-llama", "steps=2", "measure.latency=false", "progress=false",
                          "task.n_train=64", "task.n_validation=16", "task.n_test=16", "logger=wandb", "+lr_search=default",
                          "lr_search.grid=[1e-3,1e-2]", f"results_dir={res}"], env=env, timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [result] = res.glob("*.json")
    rec = json.loads(result.read_text())
    runs = [read_offline_run(d) for d in (tmp_path / "wb" / "wandb").glob("offline-run-*")]
    final = [r for r in runs if "protocol:lr_search" in r["tags"]]
    assert len(runs) == 3 and len(final) == 1
    assert final[0]["name"] == rec["run_id"] and final[0]["summary"]["lr"] == rec["lr"]
    assert final[0]["summary"]["metrics.test.accuracy"] == rec["metrics"]["test"]["accuracy"]
