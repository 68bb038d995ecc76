"""The record's measured fields, named once.

Each `Field` is one figure of a result record: its dotted path in the record (`cost.weight_bytes`)
is also its column name in the report's DataFrame, its CSV header, the name claims use
(`metric: cost.weight_bytes`) and its W&B key. Unit, direction and legend sit beside it, so the
table header, the bolding and the legend come from here too.

Stdlib only: experiments/ (which writes records) and analysis/ (which must not import torch)
both import it.

Task metrics (`metrics.<split>.<name>`) are not listed here: each task declares its own in its
YAML (name, direction, primary), and the record carries that declaration in `config.task`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MIB = 2**20


@dataclass(frozen=True)
class Field:
    path: str  # where the value sits in the record, dotted; also its name everywhere else
    unit: str  # bytes, ms, s, frac, ratio, count, percent, tokens/s, samples/s, flop, flop/s
    direction: str | None  # "min" | "max": which way is better; None: not compared
    label: str  # table header, unit in brackets
    legend: str
    table: str = "main"  # "main" | "details" | "none" (recorded, not tabulated)
    scale: float = 1.0  # display multiplier (bytes -> MiB, frac -> %)
    digits: int = 1
    adapters_only: bool = False  # meaningless for methods without an adapter (reference/lower_reference roles)
    needs_merge: bool = False  # none where the method cannot merge (method_info.can_merge false)
    noise: str | None = None  # path of the field holding this one's measurement noise

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.path.split(".", 1)[1]


FIELDS: tuple[Field, ...] = (
    Field("params.trainable", "count", "min", "Trainable params (count)", "Parameters updated by the optimiser.", digits=0),
    Field("params.trainable_pct", "percent", "min", "Trainable (%)", "Trainable / total parameters.", digits=3),
    Field("params.total", "count", None, "Total params (count)", "All parameters of the adapted model.", table="none", digits=0),
    Field("cost.peak_train_mem_growth_bytes", "bytes", "min", "Train mem growth, peak (MiB)",
          "Peak memory growth during training over the memory held before it; what was measured is in 'Mem kind' "
          "(measurement.memory_kind).", scale=1 / MIB),
    Field("cost.weight_bytes", "bytes", "min", "Weights (MiB)", "Bytes of all model weights as trained (4-bit for QLoRA).", scale=1 / MIB),
    Field("cost.train_tokens_per_s_median", "tokens/s", "max", "Train tok/s (tokens/s)", "Median training throughput after warm-up steps.", digits=0),
    Field("cost.step_time_ms_median", "ms", "min", "Step time (ms)", "Median optimiser-step wall time."),
    Field("cost.mfu_frac", "frac", "max", "MFU (%)", "Model FLOPs utilisation: achieved FLOP/s over measured peak FLOP/s of the device.", scale=100),
    Field("cost.latency_overhead_unmerged_frac", "frac", "min", "Latency overhead unmerged (%)",
          "Inference latency vs the base model with the adapter unmerged; ± is the run's latency noise (cost.latency_noise_frac). "
          "Bold: smallest |overhead|. 'not measured': latency was off (measure.latency=false).", scale=100, adapters_only=True,
          noise="cost.latency_noise_frac"),
    Field("cost.latency_overhead_merged_frac", "frac", "min", "Latency overhead merged (%)",
          "Same, after merging the adapter into the weights; 'n/a (cannot merge)' when method_info.can_merge is false.",
          scale=100, adapters_only=True, needs_merge=True, noise="cost.latency_noise_frac"),
    Field("cost.latency_noise_frac", "frac", None, "Latency noise (%)",
          "Widest exact 95% confidence interval of any latency median behind an overhead, relative to that median.", table="none", scale=100),
    Field("cost.adapter_bytes", "bytes", "min", "Adapter size (KiB)", "Bytes saved per task (adapter + head; full FT: whole model).", scale=1 / 1024),
    Field("cost.est_train_mem_growth_bytes", "bytes", None, "Est. train mem (MiB)",
          "Estimated training memory growth from the parameter count, optimiser state and activations.", table="details", scale=1 / MIB),
    Field("cost.mem_measured_over_estimated_ratio", "ratio", None, "Measured / est. mem (×)",
          "Peak train memory growth divided by the estimate.", table="details", digits=2),
    Field("cost.peak_train_reserved_bytes", "bytes", None, "Peak reserved (MiB)",
          "CUDA allocator peak reserved memory; '–' on CPU.", table="details", scale=1 / MIB),
    Field("cost.train_samples_per_s_median", "samples/s", None, "Train samples/s (samples/s)", "Median training throughput in examples.", table="details"),
    Field("cost.step_time_ms_p10", "ms", None, "Step time p10 (ms)", "10th percentile of optimiser-step wall time.", table="details"),
    Field("cost.step_time_ms_p90", "ms", None, "Step time p90 (ms)", "90th percentile of optimiser-step wall time.", table="details"),
    Field("cost.train_tokens_per_s_p10", "tokens/s", None, "Train tok/s p10 (tokens/s)", "10th percentile of training throughput.", table="details", digits=0),
    Field("cost.train_tokens_per_s_p90", "tokens/s", None, "Train tok/s p90 (tokens/s)", "90th percentile of training throughput.", table="details", digits=0),
    Field("cost.flops_per_step", "flop", None, "FLOPs/step (GFLOP)", "Model FLOPs per optimiser step.", table="details", scale=1e-9),
    Field("cost.peak_flops_per_s", "flop/s", None, "Peak FLOP/s (TFLOP/s)",
          "Measured peak FLOP/s of the device and dtype, the denominator of MFU.", table="details", scale=1e-12, digits=2),
    Field("cost.train_tokens_per_s_per_device_median", "tokens/s", None, "Train tok/s per device (tokens/s)",
          "Median training throughput of the whole job divided by its devices (distributed.world_size).", table="details", digits=0),
    Field("cost.peak_train_mem_growth_bytes_per_rank", "bytes", None, "Train mem growth per rank (MiB)",
          "Each rank's peak training memory growth, in rank order; cost.peak_train_mem_growth_bytes is their max.",
          table="none", scale=1 / MIB),
    Field("cost.peak_train_rss_bytes_per_rank", "bytes", None, "Peak RSS per rank (MiB)",
          "Each CPU rank's peak resident memory during training, in rank order.", table="none", scale=1 / MIB),
    Field("cost.peak_train_mem_bytes_per_rank", "bytes", None, "Peak allocated per rank (MiB)",
          "Each CUDA rank's peak allocated memory during training, in rank order.", table="none", scale=1 / MIB),
    Field("cost.peak_train_reserved_bytes_per_rank", "bytes", None, "Peak reserved per rank (MiB)",
          "Each CUDA rank's allocator peak reserved memory during training, in rank order.", table="none", scale=1 / MIB),
    Field("distributed.world_size", "count", None, "World size (count)",
          "Processes (devices) the run trained on; distributed.strategy says how (none, ddp, fsdp).", table="details", digits=0),
    Field("timing.train_s", "s", None, "Train time (s)", "Wall time of the training loop.", table="details"),
    Field("timing.eval_s", "s", None, "Eval time (s)", "Wall time of evaluation.", table="details"),
    Field("cost.latency_ms_base", "ms", None, "Latency base (ms)", "Median inference latency of the base model.", table="details", digits=2),
    Field("cost.latency_ms_unmerged", "ms", None, "Latency unmerged (ms)", "Median inference latency with the adapter unmerged.",
          table="details", digits=2, adapters_only=True),
    Field("cost.latency_ms_merged", "ms", None, "Latency merged (ms)",
          "Median inference latency after merging; 'n/a (cannot merge)' when method_info.can_merge is false.",
          table="details", digits=2, adapters_only=True, needs_merge=True),
)
BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}

# Facts about how a run was measured and what its method can do: recorded beside `cost`, never
# in it, because they are not costs and nobody compares them as such.
MEASUREMENT_KEYS = ("memory_kind", "latency_protocol", "latency_batch", "latency_length", "latency_repeats", "peak_flops_key")
METHOD_INFO_KEYS = ("can_merge",)

# Schema-1 record paths -> their schema-2 paths. analysis.load upgrades old records with it.
V1_RENAMES: dict[str, str] = {
    "cost.latency_overhead_unmerged": "cost.latency_overhead_unmerged_frac",
    "cost.latency_overhead_merged": "cost.latency_overhead_merged_frac",
    "cost.latency_noise_rel": "cost.latency_noise_frac",
    "cost.mfu": "cost.mfu_frac",
    "cost.mem_measured_over_estimated": "cost.mem_measured_over_estimated_ratio",
    "cost.can_merge": "method_info.can_merge",
    **{f"cost.{k}": f"measurement.{k}" for k in MEASUREMENT_KEYS},
}


def get_path(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None where any part is missing."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
