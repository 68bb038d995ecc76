"""Per-method lr search: selects on validation, reports the chosen trial's test numbers, records
the protocol; fixed-lr run ids are unchanged."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from peftbench.experiments import lrsearch, record
from peftbench.methods.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, **kw):
    c = {"method": {"name": "lora", "lr": 1e-3, "r": 8}, "model": {"name": "m"}, "task": {"name": "t", "metrics": ["accuracy"]},
         "seed": 0, "precision": "fp32", "lr": None, "results_dir": str(tmp_path), "lr_search": {"grid": None}}
    c.update(kw)
    return c


def test_search_selects_on_validation_and_reuses_the_chosen_trial(tmp_path):
    # validation prefers 1e-3, test would prefer 3e-3: the test split must not decide
    val = {3e-4: 0.5, 1e-3: 0.8, 3e-3: 0.7}
    test = {3e-4: 0.4, 1e-3: 0.6, 3e-3: 0.9}
    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        lr = cfg["lr"]
        return {"run_id": record.run_id(cfg), "status": "ok", "error": None, "lr": lr, "params": {}, "loss_curve": [1.0],
                "metrics": {"validation": {"accuracy": val[lr]}, "test": {"accuracy": test[lr]}},
                "timing": {"total_s": 1.0}, "cost": {"x": lr}, "provenance": {"p": 1}}

    rec = lrsearch.search(_config(tmp_path), fake_run)
    assert [c["lr"] for c in seen] == [3e-4, 1e-3, 3e-3]  # method default x {0.3, 1, 3}
    assert all("lr_search" not in c and c["results_dir"].endswith(".lr_trials") for c in seen)
    assert rec["protocol"] == "lr_search" == lrsearch.protocol_of(rec)
    s = rec["lr_search"]
    assert "chosen_lr" not in s and rec["lr"] == 1e-3 and s["chosen_run_id"] and s["split"] == "validation" and s["metric"] == "accuracy"
    assert [t["score"] for t in s["trials"]] == [0.5, 0.8, 0.7] and s["search_total_s"] == 3.0
    assert rec["metrics"]["test"]["accuracy"] == 0.6 and rec["cost"] == {"x": 1e-3}
    on_disk = record.read(record.result_path(tmp_path, rec["run_id"]))
    assert record.schema_problems(on_disk) == [] and on_disk["lr"] == 1e-3
    # resumable: an ok final record means nothing runs again
    seen.clear()
    lrsearch.search(_config(tmp_path), fake_run)
    assert seen == []


def test_protocols_and_bad_specs(tmp_path):
    assert lrsearch.protocol_of({"config": {"lr": None}}) == "method_default_lr"
    assert lrsearch.protocol_of({"config": {"lr": 1e-4}}) == "fixed_lr"
    with pytest.raises(ConfigError, match="cannot be combined"):
        lrsearch.resolve_spec(_config(tmp_path, lr=1e-4))
    with pytest.raises(ConfigError, match="test"):
        lrsearch.resolve_spec(_config(tmp_path, lr_search={"split": "test"}))
    assert lrsearch.resolve_spec(_config(tmp_path, lr_search={"grid": [1e-2, 1e-4]}))["grid"] == [1e-4, 1e-2]
    no_val = _config(tmp_path)
    no_val["task"]["n_validation"] = 0
    with pytest.raises(ConfigError, match="has none"):  # refused before any trial trains
        lrsearch.resolve_spec(no_val)
    fails = lambda cfg: {"run_id": record.run_id(cfg), "status": "failed", "error": "boom"}  # noqa: E731
    rec = lrsearch.search(_config(tmp_path, seed=1), fails)
    assert rec["status"] == "failed" and "no trial" in rec["error"] and record.schema_problems(rec) == []


@pytest.mark.slow
def test_lr_search_end_to_end(tmp_path, forked_cli):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    out = forked_cli.run(["run", "method=lora", "model=tiny-llama", "steps=2", "measure.latency=false", "progress=false",
                          "task.n_train=64", "task.n_validation=16", "task.n_test=16", "+lr_search=default", "lr_search.grid=[1e-3,1e-2]",
                          f"results_dir={tmp_path}"], env=env, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [final] = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]  # trials stay out of the results folder
    trials = [json.loads(p.read_text()) for p in (tmp_path / ".lr_trials").glob("*.json")]
    assert sorted(t["lr"] for t in trials) == [1e-3, 1e-2] and all(t["status"] == "ok" for t in trials)
    s = final["lr_search"]
    assert final["status"] == "ok" and final["protocol"] == "lr_search" and s["grid"] == [1e-3, 1e-2]
    best = max(trials, key=lambda t: (t["metrics"]["validation"]["accuracy"], -t["lr"]))
    assert s["chosen_run_id"] == best["run_id"] and final["lr"] == best["lr"] and "chosen_lr" not in s
    assert final["metrics"] == best["metrics"]
    assert record.schema_problems(final) == []
    # the final run id differs from a fixed-lr run's, and a fixed-lr config has no lr_search key
    assert final["run_id"] not in {t["run_id"] for t in trials}
