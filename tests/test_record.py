"""Result files: schema, atomic writes, stable ids, skip-if-done, failure records."""
import json
import os
from pathlib import Path

import pytest

from peftbench.experiments import record
from peftbench.experiments.run import execute, prepare
from tests.conftest import FAST, SMALL_TASK, compose

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_result_file_schema(run_small, tmp_path):
    # every measurement on, each repeated as few times as gives its field (the repeats do not change what is recorded)
    rec = run_small("method=lora", "steps=3", "measure.latency_repeats=3", "measure.latency_warmup=1", "measure.serving.repeats=1",
                    "measure.serving.warmup=0", "measure.serving.load_repeats=1", "measure.serving.swap_repeats=2", fast=False)
    assert record.schema_problems(rec) == []
    path = next((tmp_path / "results").glob("*.json"))
    on_disk = json.loads(path.read_text())
    assert on_disk["run_id"] == path.stem
    assert on_disk["status"] == "ok" and on_disk["error"] is None
    assert on_disk["config"]["method"]["name"] == "lora" and on_disk["config"]["steps"] == 3
    assert set(on_disk["metrics"]["test"]) >= {"accuracy", "macro_f1"}
    assert len(on_disk["loss_curve"]) == 3
    # per-item outcomes of the test set, the floor a run must beat, and how many items each score is over
    from peftbench.experiments.outcomes import decode

    n_test = on_disk["eval_items"]["test"]
    items = on_disk["items"]["test"]
    assert items["n"] == n_test and len(items["digest"]) == 16 and items["metric"] == "accuracy"
    assert decode(items).mean() == pytest.approx(on_disk["metrics"]["test"]["accuracy"])
    majority = on_disk["metrics_majority"]["test"]["accuracy"]
    assert 0 < majority < 1 and on_disk["metrics_majority"]["validation"]["accuracy"] > 0
    assert on_disk["timing"]["train_s"] > 0 and on_disk["timing"]["eval_s"] > 0
    prov = on_disk["provenance"]
    assert prov["versions"]["torch"] and prov["versions"]["peft"] and prov["versions"]["transformers"]
    assert "git_commit" in prov and "git_dirty" in prov and prov["cpu_model"] and prov["torch_threads"] >= 1
    cost = on_disk["cost"]
    for key in ("peak_train_mem_growth_bytes", "weight_bytes", "est_train_mem_bytes", "train_tokens_per_s_median",
                "flops_per_step", "mfu_frac", "adapter_bytes", "latency_ms_base", "latency_ms_unmerged", "latency_ms_merged"):
        assert cost[key] is not None and cost[key] > 0, key
    assert on_disk["method_info"]["can_merge"] is True and on_disk["measurement"]["memory_kind"]
    assert on_disk["measurement"]["merge_compare_precision"] == "fp32"  # what the merge checks computed in
    # one name from the record on: every schema field the writer knows is where the schema says
    from peftbench.experiments.fields import FIELDS, MEASUREMENT_KEYS, METHOD_INFO_KEYS, get_path

    cuda_only = {"cost.peak_train_reserved_bytes", "cost.peak_train_mem_bytes_per_rank", "cost.peak_train_reserved_bytes_per_rank"}
    # serving figures that only some configurations have: K=16 (not in the default K list), a 4-bit
    # base's re-quantising merge, generation timings (generation tasks)
    conditional = {f.path for f in FIELDS if f.path.startswith("serving.")
                   and ("k16" in f.path or "requant_4bit" in f.path or f.path.startswith("serving.gen_"))}
    conditional |= {f.path for f in FIELDS if f.path.startswith("checkpoint.")}  # runs that keep checkpoints
    assert [f.path for f in FIELDS if f.path not in cuda_only | conditional and get_path(on_disk, f.path) is None] == []
    assert not set(cost) & set(MEASUREMENT_KEYS + METHOD_INFO_KEYS)  # no non-costs in cost
    from peftbench.experiments.fields import undeclared

    assert undeclared(on_disk) == []  # and every key it wrote is named in experiments/fields.py


def test_every_key_of_every_committed_record_is_named_in_fields():
    """The reference records cover every kind of run (distributed, GRPO, generation, 4-bit, failed
    parts): each key of their measured sections is a field or a declared key, so the schema page
    (docs/records.md, generated from experiments/fields.py) lists it; a new key fails here."""
    from peftbench.experiments.fields import undeclared

    seen = 0
    for path in sorted((ROOT / "results" / "reference").rglob("*.json")):
        rec = json.loads(path.read_text())
        if isinstance(rec, dict) and rec.get("schema_version") == record.SCHEMA_VERSION:
            seen += 1
            assert undeclared(rec) == [], path
    assert seen > 500
    assert undeclared({"cost": {"weight_bytes": 1, "new_thing_ms": 2}, "serving": {"skipped": {"load": "why"}}}) == ["cost.new_thing_ms"]


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_failed_run_is_recorded_and_rerun(tmp_path, monkeypatch):
    import peftbench.experiments.run as run_mod

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


TINY = [*SMALL_TASK, *FAST, "model=tiny-llama", "steps=2"]


@pytest.mark.slow
def test_diverged_run_is_recorded_and_left_out_of_the_report(tmp_path):
    """A NaN loss stops training at that step; the record says diverged and where; the next run
    goes on; the report lists it with the failed runs and keeps it out of every mean."""
    from peftbench.analysis.load import load_results

    bad = execute(prepare(compose([*TINY, "method=full_ft", "lr=1e30", "grad_clip=0", "steps=6", f"results_dir={tmp_path}"])))
    assert bad["status"] == "diverged" and bad["diverged_at_step"] == 2
    assert len(bad["loss_curve"]) == 2 and all(x == x for x in bad["loss_curve"])  # the finite losses before it
    assert "metrics" not in bad and record.schema_problems(bad) == []
    path = record.result_path(tmp_path, bad["run_id"])
    assert not record.is_done(path)
    good = execute(prepare(compose([*TINY, "method=lora", f"results_dir={tmp_path}"])))
    assert good["status"] == "ok"
    loaded = load_results([tmp_path])
    assert list(loaded.ok["method"]) == ["lora"]
    assert list(loaded.failed["run_id"]) == [bad["run_id"]] and "diverged" in loaded.failed["error"].iloc[0]


@pytest.mark.parametrize("content", ['{"schema_version": 1, "run_id": "trunc', '{"schema_version": 1, "status": "ok"}', "[1, 2]"],
                         ids=["corrupt", "schema-invalid", "not-an-object"])
@pytest.mark.slow
def test_corrupt_or_invalid_result_is_named_and_run_again(content, tmp_path, capsys):
    plan = prepare(compose([*TINY, "method=lora", f"results_dir={tmp_path}"]))
    plan.path.write_text(content)
    assert not record.is_done(plan.path)
    rec = execute(plan)
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if str(plan.path) in line and line.startswith("rerun")]
    assert len(named) == 1 and ("corrupt" in named[0] or "schema-invalid" in named[0])
    assert rec["status"] == "ok" and record.is_done(plan.path)


@pytest.mark.slow
def test_full_disk_gives_one_line_and_no_partial_file(tmp_path, monkeypatch, capsys):
    import errno

    from peftbench.experiments.app import stopped_cleanly

    plan = prepare(compose([*TINY, "method=lora", f"results_dir={tmp_path}"]))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record.os, "fsync", full)
    with pytest.raises(SystemExit) as e, stopped_cleanly():
        execute(plan)
    assert e.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftbench: error: cannot write result") and "No space left" in lines[0]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".tmp")], "partial file left"


def test_statuses_the_schema_accepts():
    base = {"schema_version": record.SCHEMA_VERSION, "run_id": "r", "config": {}, "method": "m", "model": "m", "task": "t", "seed": 0,
            "precision": "fp32", "provenance": {}}
    assert record.schema_problems({**base, "status": "interrupted", "error": "interrupted by SIGTERM"}) == []
    assert record.schema_problems({**base, "status": "diverged", "error": "x", "loss_curve": [1.0], "diverged_at_step": 1}) == []
    assert "missing diverged_at_step" in record.schema_problems({**base, "status": "diverged", "error": "x", "loss_curve": []})
    assert record.schema_problems({**base, "status": "weird"})


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
