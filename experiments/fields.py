"""The record's measured fields, named once.

Each `Field` is one figure of a result record: its dotted path in the record (`cost.weight_bytes`)
is also its column name in the report's DataFrame, its CSV header, the name claims use
(`metric: cost.weight_bytes`) and its W&B key. Unit, direction and legend sit beside it, so the
table header, the bolding and the legend come from here too.

Stdlib only: experiments/ (which writes records) and analysis/ (which must not import torch)
both import it.

Task metrics (`metrics.<split>.<name>`) are not listed here: each task declares its own in its
YAML (name, direction, primary), and the record carries that declaration (`metric_spec`,
experiments/metric_spec.py). How a figure was measured (`measurement.*`) and the forgetting
figures have their own sections below.
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
    table: str = "main"  # "main" | "details" | "serving" | "none" (recorded, not tabulated)
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
    Field("cost.latency_ms_base", "ms", None, "Latency base (ms)", "Median inference latency of the base model.", table="details", digits=2),
    Field("cost.latency_ms_unmerged", "ms", None, "Latency unmerged (ms)", "Median inference latency with the adapter unmerged.",
          table="details", digits=2, adapters_only=True),
    Field("cost.latency_ms_merged", "ms", None, "Latency merged (ms)",
          "Median inference latency after merging; 'n/a (cannot merge)' when method_info.can_merge is false.",
          table="details", digits=2, adapters_only=True, needs_merge=True),
)

# Serving costs (experiments/meters/serving.py). `table="serving"`: the report's serving table; the rest
# is in the CSV only. K: adapters on one base (measure.serving.adapters picks among these).
SERVING_KS = (1, 2, 4, 8, 16)
MERGE_VARIANTS = ("merged_fp32", "merged_bf16", "merged_requant_4bit")
GEN_MODELS = ("base", "unmerged", "merged")


def _serving(key: str, unit: str, direction: str | None, label: str, legend: str, table: str = "serving", **kw: Any) -> Field:
    return Field(f"serving.{key}", unit, direction, label, legend, table=table, **kw)


SERVING_FIELDS: tuple[Field, ...] = (
    _serving("latency_b1_ms_base", "ms", None, "B1 latency base (ms)", "Median batch-1 inference latency of the base model.", digits=2),
    _serving("latency_b1_overhead_unmerged_frac", "frac", "min", "B1 overhead unmerged (%)",
             "Batch-1 latency vs the base, adapter unmerged, measured interleaved with it; ± is serving.latency_b1_noise_frac.",
             scale=100, adapters_only=True, noise="serving.latency_b1_noise_frac"),
    _serving("latency_b1_overhead_merged_frac", "frac", "min", "B1 overhead merged (%)",
             "Batch-1 latency vs the base after merging; ± is serving.latency_b1_noise_frac.",
             scale=100, adapters_only=True, needs_merge=True, noise="serving.latency_b1_noise_frac"),
    _serving("latency_b1_noise_frac", "frac", None, "B1 latency noise (%)",
             "Widest exact 95% CI of any batch-1 latency median, relative to that median.", table="none", scale=100),
    _serving("latency_b1_ms_unmerged", "ms", None, "B1 latency unmerged (ms)", "Median batch-1 latency, adapter unmerged.",
             table="none", digits=2, adapters_only=True),
    _serving("latency_b1_ms_merged", "ms", None, "B1 latency merged (ms)", "Median batch-1 latency after merging.",
             table="none", digits=2, adapters_only=True, needs_merge=True),
    _serving("load_ms", "ms", "min", "Load (ms)",
             "Median time to put the saved adapter from disk onto a loaded base model (wrap + read).", adapters_only=True),
    _serving("load_noise_frac", "frac", None, "Load noise (%)", "Relative width of the load median's 95% CI.", table="none", scale=100),
    _serving("load_another_ms", "ms", "min", "Add adapter (ms)",
             "Median time to load one more adapter onto a base that already serves one (peft load_adapter).", adapters_only=True),
    _serving("swap_ms", "ms", "min", "Swap (ms)", "Median time to switch the active adapter between two loaded ones (set_adapter).",
             digits=3, adapters_only=True),
    _serving("swap_noise_frac", "frac", None, "Swap noise (%)", "Relative width of the swap median's 95% CI.", table="none", scale=100),
    _serving("mixed_second_adapter_overhead_frac", "frac", "min", "2nd adapter, mixed (%)",
             "Latency of a batch mixing 2 adapters (peft adapter_names) over the same batch on 1 adapter, minus 1; "
             "± is serving.mixed_noise_frac.", scale=100, adapters_only=True, noise="serving.mixed_noise_frac"),
    _serving("naive_second_adapter_overhead_frac", "frac", "min", "2nd adapter, naive (%)",
             "The same batch served adapter by adapter (one forward per adapter's rows): 2 adapters over 1, minus 1.",
             scale=100, adapters_only=True, noise="serving.mixed_noise_frac"),
    _serving("mixed_overhead_per_adapter_frac", "frac", "min", "Per added adapter, mixed (%)",
             "Least-squares slope of mixed-batch latency (relative to K=1) against K.", scale=100, adapters_only=True),
    _serving("naive_overhead_per_adapter_frac", "frac", "min", "Per added adapter, naive (%)",
             "The same slope served adapter by adapter.", scale=100, adapters_only=True),
    _serving("mixed_noise_frac", "frac", None, "Mixed-batch noise (%)",
             "Widest exact 95% CI of any mixed-batch latency median, relative to that median.", table="none", scale=100),
    _serving("merged_ms_mixed_batch", "ms", None, "Merged, mixed batch (ms)", "The mixed batch on one merged model.",
             table="none", digits=2, adapters_only=True, needs_merge=True),
    _serving("merged_samples_per_s_mixed_batch", "samples/s", None, "Merged (samples/s)", "Throughput of one merged model on the mixed batch.",
             table="none", adapters_only=True, needs_merge=True),
    *(f for k in SERVING_KS for f in (
        _serving(f"mixed_ms_k{k}", "ms", None, f"Mixed K={k} (ms)", f"Median latency of the batch mixing {k} adapters.",
                 table="none", digits=2, adapters_only=True),
        _serving(f"naive_ms_k{k}", "ms", None, f"Naive K={k} (ms)", f"The same batch served adapter by adapter, {k} adapters.",
                 table="none", digits=2, adapters_only=True),
        _serving(f"mixed_samples_per_s_k{k}", "samples/s", None, f"Mixed K={k} (samples/s)", f"Throughput mixing {k} adapters.",
                 table="none", adapters_only=True),
        _serving(f"naive_samples_per_s_k{k}", "samples/s", None, f"Naive K={k} (samples/s)", f"Throughput adapter by adapter, {k} adapters.",
                 table="none", adapters_only=True),
        _serving(f"mixed_overhead_vs_merged_frac_k{k}", "frac", None, f"Mixed K={k} vs merged (%)",
                 f"Mixing {k} adapters over one merged model, minus 1.", table="none", scale=100, adapters_only=True, needs_merge=True),
    )),
    _serving("primary_drop_bf16_vs_fp32", "frac", "min", "bf16 merge drop (pp)",
             "Test primary metric of the adapter merged in fp32 minus merged in bf16, signed so that positive is worse "
             "(for a 4-bit base: merged into the dequantised weights).", scale=100, adapters_only=True, needs_merge=True),
    *(f for v in MERGE_VARIANTS for f in (
        _serving(f"primary_{v}", "score", None, f"Primary, {v}", f"Test primary metric, {v.replace('_', ' ')}.",
                 table="none", digits=4, adapters_only=True, needs_merge=True),)),
    *(f for v in MERGE_VARIANTS for f in (
        _serving(f"{v}_max_abs_logit_diff", "logit", "min", f"{v.split('_', 1)[1]} max |Δlogit|",
                 f"Largest |logit difference| to the unmerged model on the fixed batch, {v.replace('_', ' ')}; computed in "
                 "measurement.merge_compare_precision (fp32 where the weights are fp32; older records: the run's precision).",
                 table="serving" if v != "merged_requant_4bit" else "none", digits=4, adapters_only=True, needs_merge=True),
        _serving(f"{v}_mean_abs_logit_diff", "logit", None, f"{v.split('_', 1)[1]} mean |Δlogit|",
                 f"Mean |logit difference| to the unmerged model, {v.replace('_', ' ')}.", table="none", digits=5,
                 adapters_only=True, needs_merge=True),
    )),
    *(f for g in GEN_MODELS for f in (
        _serving(f"gen_ttft_ms_{g}", "ms", "min" if g != "base" else None, f"TTFT {g} (ms)",
                 f"Median time to first token at batch 1, {g} model (generation tasks).", adapters_only=g != "base",
                 needs_merge=g == "merged", table="serving" if g != "base" else "none"),
        _serving(f"gen_tokens_per_s_{g}", "tokens/s", "max" if g != "base" else None, f"Decode tok/s {g} (tokens/s)",
                 f"Greedy decode tokens/s after the first token (median per-token time), {g} model.", adapters_only=g != "base",
                 needs_merge=g == "merged", table="serving" if g != "base" else "none"),
    )),
    _serving("gen_noise_frac", "frac", None, "Generation noise (%)", "Widest relative 95% CI of the generation medians.",
             table="none", scale=100),
)
# A run's phases, in the order it goes through them (experiments/run.py assemble); the README's
# timing table lists them in this order.
TIMING_FIELDS: tuple[Field, ...] = (
    Field("timing.load_s", "s", None, "Load (s)", "load (weights, tokenizer, data)", table="none"),
    Field("timing.measure_base_s", "s", None, "Base model (s)", "base model: scores, forgetting probe, latency copy", table="none"),
    Field("timing.prepare_data_s", "s", None, "Adapt (s)", "adapting", table="none"),
    Field("timing.train_s", "s", None, "Train time (s)", "training", table="details"),
    Field("timing.eval_s", "s", None, "Eval time (s)", "evaluation (task metrics, forgetting, lm-eval)", table="details"),
    Field("timing.measure_s", "s", None, "Measure (s)", "costs, latency, merge", table="none"),
    Field("timing.total_s", "s", None, "Total (s)", "the whole run, load to record", table="none"),
)


def _recorded(path: str, unit: str, legend: str, **kw: Any) -> Field:
    """A figure the record keeps for whoever wants it (CSV, W&B), in no table."""
    return Field(path, unit, None, f"{path.split('.', 1)[1]} ({unit})", legend, table="none", **kw)


RECORDED_FIELDS: tuple[Field, ...] = (
    _recorded("cost.est_weight_bytes", "bytes", "Estimated bytes of the weights (meters.estimate).", scale=1 / MIB),
    _recorded("cost.est_grad_bytes", "bytes", "Estimated bytes of the gradients.", scale=1 / MIB),
    _recorded("cost.est_optimizer_bytes", "bytes", "Estimated bytes of the optimiser state.", scale=1 / MIB),
    _recorded("cost.est_activation_bytes", "bytes", "Estimated bytes of the activations kept for backward.", scale=1 / MIB),
    _recorded("cost.est_autocast_cache_bytes", "bytes", "Estimated bytes of autocast's low-precision weight copies.", scale=1 / MIB),
    _recorded("cost.est_unsharded_layer_bytes", "bytes", "Estimated bytes of one layer gathered whole under FSDP.", scale=1 / MIB),
    _recorded("cost.est_train_mem_bytes", "bytes", "Estimated total training memory.", scale=1 / MIB),
    _recorded("cost.peak_train_rss_bytes", "bytes", "Peak resident memory of the process during training (CPU).", scale=1 / MIB),
    _recorded("cost.flops_forward", "flop", "Model FLOPs of one forward pass over a training batch.", scale=1e-9),
    _recorded("cost.throughput_steps_counted", "count", "Steps whose times make the throughput medians.", digits=0),
    _recorded("cost.throughput_warmup_steps_excluded", "count", "First steps left out of the medians as warm-up.", digits=0),
    _recorded("cost.train_samples_per_s_p10", "samples/s", "10th percentile of training throughput in examples."),
    _recorded("cost.train_samples_per_s_p90", "samples/s", "90th percentile of training throughput in examples."),
    _recorded("cost.latency_ms_base_p10", "ms", "10th percentile of the base model's latency.", digits=2),
    _recorded("cost.latency_ms_base_p90", "ms", "90th percentile of the base model's latency.", digits=2),
    _recorded("cost.latency_ms_unmerged_p10", "ms", "10th percentile of the unmerged latency.", digits=2),
    _recorded("cost.latency_ms_unmerged_p90", "ms", "90th percentile of the unmerged latency.", digits=2),
    _recorded("cost.latency_ms_merged_p10", "ms", "10th percentile of the merged latency.", digits=2),
    _recorded("cost.latency_ms_merged_p90", "ms", "90th percentile of the merged latency.", digits=2),
    _recorded("cost.latency_ms_base_beside_merged", "ms", "The base's median measured again beside the merged model.", digits=2),
    _recorded("cost.latency_base_drift_rel", "ratio", "How far the base's median moved between the two latency measurements.", digits=3),
    _recorded("cost.merge_max_abs_logit_diff", "logit", "Largest |logit| difference between the merged and unmerged model on the "
              "latency batch, computed in measurement.merge_compare_precision: how far merging moved the outputs.", digits=6),
    _recorded("serving.mixed_batch_rows", "count", "Rows of the mixed-adapter batch.", digits=0),
    # only in runs that keep training checkpoints (checkpoint_every_steps > 0; experiments/checkpoint.py)
    _recorded("checkpoint.every_steps", "steps", "Steps between the run's training checkpoints.", digits=0),
    _recorded("checkpoint.resumed_from_step", "steps", "The step the run went on from after an interruption; 0: trained in one go.",
              digits=0),
    _recorded("checkpoint.train_s_before_resume", "s", "Training time in earlier starts, before that step.", digits=1),
)
FIELDS = FIELDS + TIMING_FIELDS + SERVING_FIELDS + RECORDED_FIELDS
BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}

# Facts about how a run was measured and what its method can do: recorded beside `cost`, never
# in it, because they are not costs and nobody compares them as such.
MEASUREMENT_KEYS = ("memory_kind", "latency_protocol", "latency_batch", "latency_length", "latency_repeats", "peak_flops_key",
                    "mfu_unknown_reason", "merge_compare_precision")
METHOD_INFO_KEYS = ("can_merge",)


@dataclass(frozen=True)
class Key:
    """A key of a record's measured sections that is not a figure any table compares: a fact about
    how the run went (text, a flag, a setting), a series with one value per step, or one part's
    breakdown. `path` ending in `.<part>` stands for one key per part."""
    path: str
    unit: str  # text, flag, count, frac, s, nats, per step
    what: str


SERVING_PARTS = ("batch1", "load", "adapters", "merge_precision", "generation")
# The record's sections whose every key is named here (a task's metrics are its YAML's, the config
# is Hydra's, provenance describes the machine)
MEASURED_SECTIONS = ("params", "cost", "timing", "measurement", "method_info", "serving", "forgetting", "objective", "checkpoint",
                     "distributed")
KEYS: tuple[Key, ...] = (
    *(Key(f"measurement.{k}", unit, what) for k, unit, what in (
        ("memory_kind", "text", "What the memory figures measured: cpu_rss_hwm or cpu_rss_sampled_5ms (resident memory), cuda_peak_allocated."),
        ("latency_protocol", "text", "interleaved_with_base (each overhead against a base timed in the same rounds) or base_before_training."),
        ("latency_batch", "count", "Rows of the latency batch (measure.latency_batch)."),
        ("latency_length", "count", "Tokens per row of the latency batch."),
        ("latency_repeats", "count", "Timed rounds behind each latency median."),
        ("peak_flops_key", "text", "The cache key of the peak FLOP/s probe: device, dtype, threads, CPU model and flags, torch build."),
        ("mfu_unknown_reason", "text", "Why the MFU is not given (above 100% of the probed peak even after probing again, or no FLOP "
                                       "model for the objective); absent where it is."),
        ("merge_compare_precision", "text", "The precision the merged and unmerged logits were compared in."),
        ("costs_from", "text", "The run whose seed- and lr-independent costs this record copied; null: measured by this run."),
        ("base_from_cache", "flag", "The base model's scores and forgetting side came from the cache (experiments/reuse.py)."),
        ("cpu_share_train_frac", "frac", "This process's CPU time over wall time x its threads while it trained."),
        ("cpu_share_timing_frac", "frac", "The same while latency and serving were timed."),
        ("others_busy_train_frac", "frac", "Other processes' CPU time over wall time x the usable cores while this run trained."),
        ("others_busy_timing_frac", "frac", "The same while latency and serving were timed."),
        ("loadavg_1m", "count", "The machine's 1-minute load average when the run was measured."),
        ("contended", "flag", "Other work competed for the cores while this run was timed: its timings are marked, and no cache keeps them."),
        ("contended_reason", "text", "What competed, and during which stretch."))),
    Key("method_info.can_merge", "flag", "The method's adapter merges into the base weights."),
    Key("distributed.strategy", "text", "none, ddp or fsdp."),
    Key("distributed.backend", "text", "The process group's backend (gloo, nccl); null for one process."),
    Key("distributed.nproc_per_node", "count", "Processes per machine."),
    Key("distributed.nnodes", "count", "Machines."),
    Key("forgetting.kind", "text", "causal_lm (the probe text's cross-entropy) or classifier (the encoder's hidden states)."),
    Key("forgetting.primary", "text", "The key below that is the run's forgetting figure."),
    Key("forgetting.probe", "text", "Where the probe text came from (forgetting.data_files, or pydoc_data.topics)."),
    Key("forgetting.probe_texts", "count", "Texts in the probe."),
    Key("forgetting.probe_tokens", "count", "Tokens per probe text."),
    Key("forgetting.ce_before_nats", "nats", "Mean cross-entropy of the probe under the base model (causal LMs)."),
    Key("forgetting.ce_after_nats", "nats", "The same after training."),
    Key("forgetting.ce_increase_nats", "nats", "After minus before: the causal LM's forgetting figure."),
    Key("forgetting.kl_base_tuned_nats", "nats", "Mean KL divergence from the base model's next-token distribution to the tuned one's."),
    Key("forgetting.hidden_drift_cos", "frac", "Mean 1 - cosine between the base and tuned encoder's probe hidden states: the classifier's figure."),
    Key("objective.reward_mean", "per step", "GRPO: mean reward of the step's completions."),
    Key("objective.reward_std", "per step", "GRPO: their standard deviation."),
    Key("objective.groups_without_signal_frac", "per step", "GRPO: share of prompt groups whose rewards did not vary (no gradient)."),
    Key("objective.kl_to_reference", "per step", "GRPO: KL divergence to the reference policy."),
    Key("objective.completion_tokens_mean", "per step", "GRPO: mean completion length in tokens."),
    Key("objective.generation_s", "per step", "GRPO: seconds spent sampling and scoring completions."),
    Key("objective.generation_s_total", "s", "GRPO: the sum of generation_s."),
    Key("objective.num_generations", "count", "GRPO: completions per prompt."),
    Key("objective.prompts_per_step", "count", "GRPO: prompts per step."),
    Key("objective.reference", "text", "GRPO's reference policy: disabled adapters or a frozen copy."),
    Key("objective.trl_version", "text", "The trl version that trained the run."),
    Key("serving.primary_unmerged", "score", "Older records only: a copy of the test primary metric, which `metrics.test` holds "
        "(a run that copied its serving costs copied it too, so it could be another seed's); nothing reads it."),
    Key("serving.gen_new_tokens", "count", "Greedy tokens per timed generation (measure.serving.generation_tokens)."),
    Key("serving.measure_s.<part>", "s", f"Wall time of each serving part ({', '.join(SERVING_PARTS)})."),
    Key("serving.skipped.<part>", "text", "Why a serving part (or `save`, or `all`) has no figures: the method cannot, or it failed (the error)."),
)


_KEY_PATHS = {k.path for k in KEYS}
_PER_PART = {k.path.removesuffix(".<part>") for k in KEYS if k.path.endswith(".<part>")}  # e.g. serving.skipped


def declared(path: str) -> bool:
    """Whether a record key's dotted path is named in this module: a field or a key (a per-part
    key's section, empty or not, and each of its parts)."""
    return path in BY_PATH or path in _KEY_PATHS or path in _PER_PART or path.rpartition(".")[0] in _PER_PART


def undeclared(record: Mapping[str, Any]) -> list[str]:
    """The dotted paths in a record's measured sections that this module does not name."""
    def leaves(node: Mapping[str, Any], prefix: str):
        for k, v in node.items():
            if isinstance(v, Mapping) and v:
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    return sorted(p for section in MEASURED_SECTIONS if isinstance(record.get(section), Mapping)
                  for p in leaves(record[section], f"{section}.") if not declared(p))


def serving_depends_on_weights(key: str) -> bool:
    """A serving figure every run measures on its own trained weights: how far each merge variant
    moves the logits on the fixed batch (two forward passes). The other serving figures, the merge
    variants' test scores included (one test pass each), are measured once per cost configuration
    and copied between seeds and lrs, the copy naming its source run."""
    return key.endswith("_abs_logit_diff")

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
