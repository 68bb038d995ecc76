"""Result files: schema, atomic writes, stable ids, skip-if-done, failure records."""
import json
import os
from pathlib import Path

import pytest

from experiments import record
from experiments.run import execute, prepare
from tests.conftest import FAST, SMALL_TASK, compose


def test_result_file_schema(run_small, tmp_path):
    rec = run_small("method=lora", "steps=3", fast=False, *[])
    assert record.schema_problems(rec) == []
    path = next((tmp_path / "results").glob("*.json"))
    on_disk = json.loads(path.read_text())
    assert on_disk["run_id"] == path.stem
    assert on_disk["status"] == "ok" and on_disk["error"] is None
    assert on_disk["config"]["method"]["name"] == "lora" and on_disk["config"]["steps"] == 3
    assert set(on_disk["metrics"]["test"]) >= {"accuracy", "macro_f1"}
    assert len(on_disk["loss_curve"]) == 3
    assert on_disk["timing"]["train_s"] > 0 and on_disk["timing"]["eval_s"] > 0
    prov = on_disk["provenance"]
    assert prov["versions"]["torch"] and prov["versions"]["peft"] and prov["versions"]["transformers"]
    assert "git_commit" in prov and "git_dirty" in prov and prov["cpu_model"] and prov["torch_threads"] >= 1
    cost = on_disk["cost"]
    for key in ("peak_train_mem_growth_bytes", "weight_bytes", "est_train_mem_bytes", "train_tokens_per_s_median",
                "flops_per_step", "mfu_frac", "adapter_bytes", "latency_ms_base", "latency_ms_unmerged", "latency_ms_merged"):
        assert cost[key] is not None and cost[key] > 0, key
    assert on_disk["method_info"]["can_merge"] is True and on_disk["measurement"]["memory_kind"]
    # one name from the record on: every schema field the writer knows is where the schema says
    from experiments.fields import FIELDS, MEASUREMENT_KEYS, METHOD_INFO_KEYS, get_path

    cuda_only = {"cost.peak_train_reserved_bytes"}
    assert [f.path for f in FIELDS if f.path not in cuda_only and get_path(on_disk, f.path) is None] == []
    assert not set(cost) & set(MEASUREMENT_KEYS + METHOD_INFO_KEYS)  # no non-costs in cost


def test_run_id_is_stable_and_ignores_where_results_go():
    a = compose(["method=lora", "results_dir=/tmp/a"])
    b = compose(["method=lora", "results_dir=/tmp/b", "force=true"])
    c = compose(["method=lora", "method.r=4"])
    assert record.run_id(a) == record.run_id(b)
    assert record.run_id(a) != record.run_id(c)
    assert record.run_id(a).startswith("minilm__synth__lora__r8__s0__")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    record.write_atomic(path, {"status": "ok", "n": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt  # as if the process were stopped mid-write

    monkeypatch.setattr(record.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        record.write_atomic(path, {"status": "ok", "n": 2})
    assert json.loads(path.read_text())["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "temp file left behind"


def test_skip_if_done_and_force(tmp_path, capsys):
    overrides = [*SMALL_TASK, *FAST, "method=linear_probe", "steps=2", f"results_dir={tmp_path}"]
    first = execute(prepare(compose(overrides)))
    path = next(tmp_path.glob("*.json"))
    mtime = path.stat().st_mtime_ns
    second = execute(prepare(compose(overrides)))
    assert "skip" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == mtime and second["finished_at"] == first["finished_at"]
    third = execute(prepare(compose([*overrides, "force=true"])))
    assert third["finished_at"] != first["finished_at"]
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_failed_run_is_recorded_and_rerun(tmp_path, monkeypatch):
    import experiments.run as run_mod

    overrides = [*SMALL_TASK, *FAST, "method=lora", "steps=2", f"results_dir={tmp_path}"]

    def explode(plan):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(run_mod, "run_plan", explode)
    rec = execute(prepare(compose(overrides)))
    assert rec["status"] == "failed" and "simulated" in rec["error"]
    assert record.schema_problems(rec) == []
    path = next(tmp_path.glob("*.json"))
    assert not record.is_done(path)
    monkeypatch.undo()
    assert execute(prepare(compose(overrides)))["status"] == "ok"


def test_run_id_ignores_the_methods_report_block():
    """Restyling a method (its YAML's report block) changes no run: the block is display metadata."""
    import copy

    a = compose(["method=lora"])
    b = copy.deepcopy(a)
    b["method"]["report"] = {**b["method"]["report"], "color": "#000000", "order": 1}
    assert a["method"]["report"]["role"] == "baseline"
    assert record.run_id(a) == record.run_id(b)
    b["method"]["alpha"] = 32
    assert record.run_id(a) != record.run_id(b)
