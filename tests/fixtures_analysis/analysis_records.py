"""Small, hand-designed result records for the analysis tests (written into tmp_path).

Designed so that every shipped claim has a known verdict:
  - dora is LoRA + 3 points on every seed (significant, paired), qlora LoRA - 1 point with
    fewer weight bytes, rslora keeps improving from r8 to r16 while LoRA stalls, loraplus has
    lower loss curves, houlsby adds latency above noise, merged LoRA is within noise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CONF = Path(__file__).resolve().parents[2] / "conf"
# The task's metric declaration as a task YAML writes it (dict form), carried in config.task.
SYNTH_METRICS = [{"name": "accuracy", "direction": "max", "primary": True}, {"name": "macro_f1", "direction": "max"}]


def report_block(method: str) -> dict[str, Any] | None:
    """The method's report metadata from its YAML in conf/method, as a run's config carries it;
    None for a method without a YAML (the report's defaults apply)."""
    path = CONF / "method" / f"{method}.yaml"
    return yaml.safe_load(path.read_text()).get("report") if path.exists() else None

SEEDS = (0, 1, 2)
SEED_OFFSET = {0: 0.0, 1: 0.01, 2: -0.005}  # shared by all methods: differences are paired


def record(method: str, *, model: str = "minilm", seed: int = 0, acc: float = 0.8, r: int | None = 8,
           targets: str | None = "attn_qv", precision: str = "bf16", steps: int = 50, lr: float = 1e-3,
           trainable: int = 10_000, weight_bytes: int = 90_000_000, lat_unmerged: float = 0.10,
           lat_merged: float | None = 0.01, lat_noise: float = 0.02, can_merge: bool = True,
           loss_scale: float = 1.0, reduction_factor: int | None = None, serving: dict[str, Any] | None = None,
           **cost: Any) -> dict[str, Any]:
    mcfg: dict[str, Any] = {"name": method, "lr": lr}
    if report_block(method) is not None:
        mcfg["report"] = report_block(method)
    if r is not None:
        mcfg["r"] = r
    if targets is not None:
        mcfg["target_modules"] = targets
    if reduction_factor is not None:
        mcfg["reduction_factor"] = reduction_factor
    rid = f"{model}__synth__{method}__r{r}__{targets}__s{seed}__{precision}__{steps}"
    return {
        "schema_version": 2, "run_id": rid, "status": "ok", "error": None,
        "method": method, "model": model, "task": "synth", "seed": seed, "precision": precision, "lr": lr,
        "config": {"method": mcfg, "steps": steps, "seed": seed, "precision": precision,
                   "task": {"name": "synth", "metrics": SYNTH_METRICS}},
        "params": {"trainable": trainable, "total": 22_000_000, "trainable_pct": 100 * trainable / 22_000_000},
        "metrics": {"test": {"accuracy": acc, "macro_f1": acc - 0.05}, "validation": {"accuracy": acc + 0.001, "macro_f1": acc - 0.04}},
        "loss_curve": [loss_scale * (1.1 - 0.8 * i / steps) + 0.01 * seed for i in range(steps)],
        "timing": {"train_s": 10.0},
        "cost": {"peak_train_mem_growth_bytes": 100 * 2**20 + trainable * 16,
                 "weight_bytes": weight_bytes, "train_tokens_per_s_median": 3000.0, "step_time_ms_median": 100.0,
                 "mfu_frac": 0.3, "latency_overhead_unmerged_frac": lat_unmerged,
                 "latency_overhead_merged_frac": lat_merged if can_merge else None,
                 "latency_noise_frac": lat_noise, "adapter_bytes": trainable * 4, **cost},
        "measurement": {"memory_kind": "cpu_rss_hwm"},
        "method_info": {"can_merge": can_merge},
        "serving": serving,
        "provenance": {"versions": {"python": "3.11.7", "torch": "2.13.0+cpu"}, "git_commit": "abc1234", "git_dirty": True,
                       "device": "cpu", "device_name": "AMD EPYC", "cpu_model": "AMD EPYC", "cpu_count": 2, "gpu": None,
                       "cuda": None, "torch_threads": 2},
        "finished_at": f"2026-01-01T00:00:{seed:02d}",
    }


# Serving figures where the shipped serving claims hold: merged LoRA within batch-1 noise, a second
# adapter 4% mixed and 12% naive, a bf16 merge 0.6 points worse, bottleneck adapters +17% at batch 1.
LORA_SERVING = {"latency_b1_overhead_merged_frac": 0.01, "latency_b1_noise_frac": 0.02, "mixed_second_adapter_overhead_frac": 0.04,
                "naive_second_adapter_overhead_frac": 0.12, "mixed_noise_frac": 0.005, "skipped": {}}
HOULSBY_SERVING = {"latency_b1_overhead_unmerged_frac": 0.17, "latency_b1_noise_frac": 0.02,
                   "skipped": {"adapters": "the method declares no hot-swap"}}


def main_records() -> list[dict[str, Any]]:
    """minilm/synth, three seeds: every method the claims talk about."""
    recs = []
    for s in SEEDS:
        o = SEED_OFFSET[s]
        recs += [
            record("full_ft", seed=s, acc=0.90 + o, r=None, targets=None, lr=1e-4, trainable=22_000_000, lat_unmerged=0.0, can_merge=False),
            record("linear_probe", seed=s, acc=0.50 + o, r=None, targets=None, lr=3e-3, trainable=1_000, lat_unmerged=0.0, can_merge=False),
            record("lora", seed=s, acc=0.78 + o, r=4, trainable=40_000),
            record("lora", seed=s, acc=0.82 + o, r=8, trainable=75_000, serving=LORA_SERVING | {"primary_drop_bf16_vs_fp32": 0.006 + o / 10}),
            record("lora", seed=s, acc=0.82 + o, r=16, trainable=150_000),
            record("lora", seed=s, acc=0.85 + o, r=8, targets="all_linear", trainable=300_000),
            record("dora", seed=s, acc=0.85 + o, r=8, trainable=80_000, lat_unmerged=0.3),
            record("qlora", seed=s, acc=0.81 + o, r=8, trainable=75_000, weight_bytes=30_000_000),
            record("rslora", seed=s, acc=0.80 + o, r=8, trainable=75_000),
            record("rslora", seed=s, acc=0.86 + o, r=16, trainable=150_000),
            record("loraplus", seed=s, acc=0.83 + o, r=8, trainable=75_000, loss_scale=0.7),
            record("houlsby", seed=s, acc=0.84 + o, r=None, targets=None, reduction_factor=16, trainable=90_000,
                   lat_unmerged=0.25, can_merge=False, serving=HOULSBY_SERVING),
        ]
    return recs


def second_model_records() -> list[dict[str, Any]]:
    """tiny-llama/synth, one seed: must get its own table and 'untested' statistics."""
    return [record("full_ft", model="tiny-llama", acc=0.70, r=None, targets=None, trainable=1_000_000, can_merge=False),
            record("lora", model="tiny-llama", acc=0.60, trainable=5_000)]


def failed_record() -> dict[str, Any]:
    return {"schema_version": 2, "run_id": "minilm__synth__pfeiffer__s0__dead", "status": "failed", "error": "RuntimeError: CUDA out of memory",
            "method": "pfeiffer", "model": "minilm", "task": "synth", "seed": 0, "precision": "bf16",
            "config": {"method": {"name": "pfeiffer"}}, "provenance": {}}


def as_v1(rec: dict[str, Any]) -> dict[str, Any]:
    """The same run as a schema-1 record wrote it: unit-less cost names, non-costs inside
    `cost`, a list of metric names, no report block."""
    old = json.loads(json.dumps(rec))
    old["schema_version"] = 1
    cost = old["cost"]
    for new, was in (("latency_overhead_unmerged_frac", "latency_overhead_unmerged"), ("latency_overhead_merged_frac", "latency_overhead_merged"),
                     ("latency_noise_frac", "latency_noise_rel"), ("mfu_frac", "mfu")):
        if new in cost:
            cost[was] = cost.pop(new)
    cost.update(old.pop("measurement", {}))
    cost.update(old.pop("method_info", {}))
    old["config"]["method"].pop("report", None)
    old["config"]["task"]["metrics"] = [m["name"] for m in old["config"]["task"]["metrics"]]
    return old


def write_all(folder: Path, records: list[dict[str, Any]] | None = None, *, broken: bool = True) -> Path:
    """Records as <run_id>.json under folder, plus a failed run, a corrupt file and a
    schema-invalid record (unless broken=False)."""
    folder.mkdir(parents=True, exist_ok=True)
    recs = records if records is not None else main_records() + second_model_records()
    for rec in recs:
        (folder / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    if broken:
        (folder / "failed_run.json").write_text(json.dumps(failed_record()))
        (folder / "corrupt.json").write_text('{"schema_version": 2, "run_id": ')
        bad = record("lora", seed=9)
        del bad["seed"]
        (folder / "no_seed.json").write_text(json.dumps(bad))
    return folder
