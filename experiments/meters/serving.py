"""Serving costs of a trained adapter, measured after training with the same interleaved protocol
and noise bounds as the run's latency (`latency.measure_latency_interleaved`):

- batch-1 latency of the base, unmerged and merged models (the LoRA paper's setting);
- loading the saved adapter from disk onto a loaded base, and adding a further adapter to it;
- hot-swapping between two loaded adapters (peft `set_adapter`);
- K adapters on one base: one batch that mixes them (peft `adapter_names=`), the same batch run
  adapter by adapter (one forward per adapter's rows: the naive way), and on one merged model;
- merge precision: the test metric and logit differences of the unmerged model, the adapter
  merged in fp32 and in bf16 (for a 4-bit base: into the dequantised weights), and the method's
  own merge where that re-quantises;
- generation (causal LMs): time to first token and decode tokens/s, unmerged and merged.

A part the method cannot do (no saved adapter, no hot-swap, cannot merge, not a causal LM) is
recorded as absent with its reason under `serving.skipped`; a part that fails is recorded the same
way and the run goes on. What a method can do is declared by the method (`Method.serving`).
"""
from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from peftbench.experiments import metric_spec
from peftbench.experiments.fields import serving_depends_on_weights
from peftbench.experiments.meters.device import synchronizer
from peftbench.experiments.meters.latency import latency_summary, measure_latency_interleaved
from peftbench.methods.base import ConfigError, Method, ModelInfo

DEFAULTS: dict[str, Any] = {
    "enabled": False, "warmup": 1, "repeats": 6, "batch": 8, "adapters": [1, 2, 4, 8], "load_repeats": 3,
    "swap_repeats": 20, "merge_precision": True, "merge_eval": True, "generation_tokens": 16, "generation_repeats": 3,
}
# The K values the record's fields are declared for (experiments.fields); a config picks among them.
ADAPTER_COUNTS = (1, 2, 4, 8, 16)
MERGE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Unsupported(Exception):
    """A part of the serving measurement this method, model or task cannot do; the record keeps why."""


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **dict((config.get("measure") or {}).get("serving") or {})}


def validate(config: Mapping[str, Any]) -> None:
    """How the serving keys combine (each key's type is in config_check): every K in the
    declared set and no larger than the mixed batch, so that each adapter gets a row."""
    s = settings(config)
    ks = s["adapters"]
    bad = [k for k in ks if k not in ADAPTER_COUNTS]
    if bad or len(set(ks)) != len(ks):
        raise ConfigError(f"measure.serving.adapters must be distinct values among {list(ADAPTER_COUNTS)}, got {ks}; "
                          f"e.g. measure.serving.adapters=[1,2,4,8]")
    if max(ks) > s["batch"]:
        raise ConfigError(f"measure.serving.adapters has K={max(ks)} but the mixed batch has {s['batch']} rows; "
                          f"set measure.serving.batch>={max(ks)} or drop the larger K")


@dataclass
class ServingContext:
    method: Method
    info: ModelInfo
    model: nn.Module  # trained, unmerged
    base: nn.Module  # the untouched base model (never modified here: copies are adapted)
    task: Any
    adapter_dir: Path
    s: dict[str, Any]
    device: torch.device
    autocast: Callable
    length: int
    eval_batch_size: int
    score_merges: bool = True  # False: logit differences only (a run that copies the scores)
    _merged: nn.Module | None = field(default=None, repr=False)

    def merged(self) -> nn.Module:
        """A merged copy of the trained model (the trained model itself stays unmerged)."""
        if not self.method.can_merge:
            raise Unsupported("the method cannot merge its adapter into the weights")
        if self._merged is None:
            self._merged = self.method.merge(copy.deepcopy(self.model))
        return self._merged

    def fresh_base(self) -> nn.Module:
        return copy.deepcopy(self.base)

    def interleaved(self, models: Mapping[str, nn.Module], batch: dict, repeats: int | None = None) -> dict[str, dict]:
        return measure_latency_interleaved(models, batch, int(self.s["warmup"]), int(repeats or self.s["repeats"]),
                                                  self.device, self.autocast)


# -- batch-1 latency ----------------------------------------------------------------------------

def batch1_latency(ctx: ServingContext) -> dict[str, Any]:
    models = {"base": ctx.base, "unmerged": ctx.model}
    if ctx.method.can_merge:
        models["merged"] = ctx.merged()
    out = ctx.interleaved(models, ctx.task.fixed_batch(1, ctx.length))
    base = out["base"]["median_ms"]
    fig = {"latency_b1_ms_base": base, "latency_b1_ms_unmerged": out["unmerged"]["median_ms"],
           "latency_b1_overhead_unmerged_frac": out["unmerged"]["median_ms"] / base - 1,
           "latency_b1_noise_frac": max(x["noise_rel"] for x in out.values())}
    if "merged" in out:
        fig.update({"latency_b1_ms_merged": out["merged"]["median_ms"],
                    "latency_b1_overhead_merged_frac": out["merged"]["median_ms"] / base - 1})
    return fig


# -- adapter load, hot-swap, K adapters -----------------------------------------------------------

def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[float, Any]:
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return (time.perf_counter() - t0) * 1e3, result


def adapter_load(ctx: ServingContext) -> dict[str, Any]:
    """Wrap a loaded base (a fresh copy each time, copied outside the timing) and read the saved
    adapter onto it: what a server does to start serving a new task."""
    if not ctx.method.serving["load"]:
        raise Unsupported(f"{ctx.method.impl_name} saves no adapter that loads onto a base model")
    sync = synchronizer(ctx.device)
    times = []
    for _ in range(int(ctx.s["load_repeats"])):
        base = ctx.fresh_base()
        ms, loaded = timed(lambda: ctx.method.load_saved(base, ctx.info, ctx.adapter_dir), sync)
        times.append(ms)
        del loaded, base
    summary = latency_summary(times)
    return {"load_ms": summary["median_ms"], "load_noise_frac": summary["noise_rel"]}


def multi_adapter_model(ctx: ServingContext, k: int) -> tuple[nn.Module, list[str], list[float]]:
    """A fresh base with the saved adapter loaded k times under k names, and the time of each
    load after the first (adding an adapter to a base that already serves one)."""
    if not ctx.method.serving.get("hot_swap"):
        raise Unsupported("the method declares no hot-swap (it keeps no named adapters on a shared base)")
    sync = synchronizer(ctx.device)
    names = [f"a{i}" for i in range(k)]
    model = ctx.method.load_saved(ctx.fresh_base(), ctx.info, ctx.adapter_dir, adapter_name=names[0])
    adds = [timed(lambda n=n: model.load_adapter(str(ctx.adapter_dir), adapter_name=n), sync)[0] for n in names[1:]]
    model.requires_grad_(False).eval()
    return model, names, adds


def hot_swap(ctx: ServingContext, model: nn.Module, names: list[str]) -> dict[str, Any]:
    sync = synchronizer(ctx.device)
    times = [timed(lambda i=i: model.set_adapter(names[(i + 1) % 2]), sync)[0] for i in range(int(ctx.s["swap_repeats"]))]
    model.set_adapter(names[0])
    summary = latency_summary(times)
    return {"swap_ms": summary["median_ms"], "swap_noise_frac": summary["noise_rel"]}


class MixedBatch(nn.Module):
    """One forward of a batch whose rows use different adapters (peft's `adapter_names=`)."""

    def __init__(self, model: nn.Module, adapter_names: list[str]):
        super().__init__()
        self.model, self.adapter_names = model, adapter_names

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.model(**batch, adapter_names=self.adapter_names).logits


class AdapterByAdapter(nn.Module):
    """The same batch served the naive way: one forward per adapter over its own rows, switching
    the active adapter between them; logits put back in the batch's order."""

    def __init__(self, model: nn.Module, adapter_names: list[str]):
        super().__init__()
        self.model, self.adapter_names = model, adapter_names

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        parts, order = [], []
        for name in dict.fromkeys(self.adapter_names):
            rows = [i for i, n in enumerate(self.adapter_names) if n == name]
            self.model.set_adapter(name)
            parts.append(self.model(**{k: v[rows] for k, v in batch.items()}).logits)
            order += rows
        out = torch.cat(parts)
        return out[torch.argsort(torch.tensor(order, device=out.device))]


def row_adapters(names: list[str], k: int, rows: int) -> list[str]:
    """Rows assigned round-robin to the first k adapters."""
    return [names[i % k] for i in range(rows)]


def mixed_batches(ctx: ServingContext, model: nn.Module, names: list[str]) -> dict[str, Any]:
    if not ctx.method.serving.get("mixed_batch"):
        raise Unsupported("peft cannot mix this method's adapters in one batch (method declares mixed_batch: false)")
    rows = int(ctx.s["batch"])
    ks = sorted(ctx.s["adapters"])
    models: dict[str, nn.Module] = {}
    if ctx.method.can_merge:
        models["merged"] = ctx.merged()
    for k in ks:
        models[f"mixed_k{k}"] = MixedBatch(model, row_adapters(names, k, rows))
        models[f"naive_k{k}"] = AdapterByAdapter(model, row_adapters(names, k, rows))
    out = ctx.interleaved(models, ctx.task.fixed_batch(rows, ctx.length))
    fig: dict[str, Any] = {"mixed_batch_rows": rows, "mixed_noise_frac": max(x["noise_rel"] for x in out.values())}
    for k in ks:
        for kind in ("mixed", "naive"):
            ms = out[f"{kind}_k{k}"]["median_ms"]
            fig[f"{kind}_ms_k{k}"] = ms
            fig[f"{kind}_samples_per_s_k{k}"] = rows / ms * 1e3
        if "merged" in out:
            fig[f"mixed_overhead_vs_merged_frac_k{k}"] = fig[f"mixed_ms_k{k}"] / out["merged"]["median_ms"] - 1
    if "merged" in out:
        fig["merged_ms_mixed_batch"] = out["merged"]["median_ms"]
        fig["merged_samples_per_s_mixed_batch"] = rows / out["merged"]["median_ms"] * 1e3
    if 1 in ks and 2 in ks:
        for kind in ("mixed", "naive"):
            fig[f"{kind}_second_adapter_overhead_frac"] = fig[f"{kind}_ms_k2"] / fig[f"{kind}_ms_k1"] - 1
    if 1 in ks and len(ks) >= 2:
        for kind in ("mixed", "naive"):  # least-squares slope of latency / latency at K=1 against K
            rel = [fig[f"{kind}_ms_k{k}"] / fig[f"{kind}_ms_k1"] for k in ks]
            fig[f"{kind}_overhead_per_adapter_frac"] = float(np.polyfit(ks, rel, 1)[0])
    return fig


def adapters_on_one_base(ctx: ServingContext) -> tuple[dict[str, Any], dict[str, str]]:
    """Load, swap and mixed batches share one base holding max(K, 2) adapters."""
    model, names, adds = multi_adapter_model(ctx, max(max(ctx.s["adapters"]), 2))
    fig = {"load_another_ms": float(np.median(adds))}
    fig.update(hot_swap(ctx, model, names))
    skipped: dict[str, str] = {}
    try:
        fig.update(mixed_batches(ctx, model, names))
    except Unsupported as e:
        skipped["mixed_batch"] = str(e)
    return fig, skipped


# -- merge precision ------------------------------------------------------------------------------

def tuner_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def is_4bit(layer: nn.Module) -> bool:
    return type(layer).__name__ == "Linear4bit"


def dequantised_merge(layer: nn.Module, dtype: torch.dtype) -> nn.Linear:
    """A plain Linear holding the dequantised 4-bit weight plus the adapter's delta, added in
    `dtype` and stored back in fp32 (so only the merge's rounding differs between dtypes)."""
    from peft.utils.integrations import dequantize_bnb_weight

    base = layer.get_base_layer()
    weight = dequantize_bnb_weight(base.weight, state=base.weight.quant_state).to(dtype)
    for name in layer.active_adapters:
        weight = weight + layer.get_delta_weight(name).to(dtype)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=base.bias is not None, device=weight.device)
    out.weight.data = weight.float()
    if base.bias is not None:
        out.bias.data = base.bias.detach().float()
    return out


def merged_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy with every adapter layer merged in `dtype`: the layer (base weight and adapter)
    cast to `dtype` and merged by peft, then its weight stored back in fp32; a 4-bit base weight
    is dequantised first and never re-quantised."""
    merged = copy.deepcopy(model)
    for name, layer in tuner_layers(merged):
        if is_4bit(layer.get_base_layer()):
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent), child, dequantised_merge(layer, dtype))
            continue
        layer.to(dtype)
        layer.merge()
        layer.get_base_layer().float()
    return merged


def merge_compare_autocast(model: nn.Module, autocast: Callable) -> Callable:
    """The autocast under which a merged model's logits are compared with the unmerged model's:
    none (fp32 compute) where every floating weight is fp32, so that the difference is the merge's
    own rounding. Under bf16 autocast the unmerged model rounds W and the adapter's path apart while
    a merged one rounds W + delta once, and that compute noise swamps the merge (on SmolLM2 an fp32
    merge then "differed" more than a bf16 one). A model whose weights are stored in another dtype
    (bf16 weights) cannot compute in fp32 as it is, and a quantised base (4-bit, int8 weights)
    computes in its compute dtype whatever the input: the run's own autocast, as it computes."""
    return contextlib.nullcontext if all(p.dtype == torch.float32 for p in model.parameters()) else autocast


@torch.no_grad()
def logits_of(model: nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device, autocast) -> torch.Tensor:
    model.eval()
    with autocast():
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()


def merge_precision(ctx: ServingContext, task_cfg: Mapping[str, Any]) -> dict[str, Any]:
    if not ctx.s["merge_precision"]:
        raise Unsupported("off (measure.serving.merge_precision=false)")
    if not ctx.method.can_merge:
        raise Unsupported("the method cannot merge its adapter into the weights")
    layers = tuner_layers(ctx.model)
    if not layers:
        raise Unsupported("the model has no peft adapter layers to merge")
    builders: dict[str, Callable[[], nn.Module]] = {"unmerged": lambda: ctx.model}
    builders.update({f"merged_{k}": (lambda d=d: merged_in(ctx.model, d)) for k, d in MERGE_DTYPES.items()})
    if any(is_4bit(layer.get_base_layer()) for _, layer in layers):
        builders["merged_requant_4bit"] = ctx.merged  # peft's own merge re-quantises to 4 bits
    batch = ctx.task.fixed_batch(int(ctx.s["batch"]), ctx.length)
    primary = metric_spec.primary(metric_spec.of_task(task_cfg))
    name, direction = primary["name"], primary["direction"]
    score = bool(ctx.s["merge_eval"]) and ctx.score_merges and bool(ctx.task.size("test"))
    fig: dict[str, Any] = {}
    reference = None
    compare = merge_compare_autocast(ctx.model, ctx.autocast)
    for k, build in builders.items():  # one merged copy alive at a time
        variant = build()
        logits = logits_of(variant, batch, ctx.device, compare)
        if reference is None:
            reference = logits
        else:
            diff = (logits - reference).abs()
            fig[f"{k}_max_abs_logit_diff"], fig[f"{k}_mean_abs_logit_diff"] = diff.max().item(), diff.mean().item()
        if score and k != "unmerged":  # the unmerged model's score is the run's own, in metrics.test
            fig[f"primary_{k}"] = float(ctx.task.evaluate(variant, "test", ctx.eval_batch_size, ctx.device, ctx.autocast)[name])
        del variant
    if score:  # signed so that positive means the bf16 merge scored worse than the fp32 merge
        fig["primary_drop_bf16_vs_fp32"] = (1.0 if direction == "max" else -1.0) * (fig["primary_merged_fp32"] - fig["primary_merged_bf16"])
    return fig


# -- generation -------------------------------------------------------------------------------------

class TokenClock:
    """A transformers streamer that notes when each token arrives: the first `put` is the prompt,
    every later one a generated token."""

    def __init__(self, sync: Callable[[], None]):
        self.sync, self.times = sync, []

    def put(self, value: torch.Tensor) -> None:
        self.sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.no_grad()
def generate_timed(model: nn.Module, prompt: Mapping[str, torch.Tensor], tokens: int, device: torch.device, autocast,
                   pad_id: int | None) -> tuple[float, float]:
    """(time to first token in ms, decode ms per later token) of one greedy generation at batch 1."""
    clock = TokenClock(synchronizer(device))
    clock.sync()
    t0 = time.perf_counter()
    with autocast():
        model.generate(**prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=clock, pad_token_id=pad_id)
    first, last = clock.times[1], clock.times[-1]
    return (first - t0) * 1e3, (last - first) * 1e3 / max(len(clock.times) - 2, 1)


def generation(ctx: ServingContext) -> dict[str, Any]:
    if ctx.task.kind != "generation":
        raise Unsupported("not a generation task (time to first token needs a causal LM generating)")
    models = {"base": ctx.base, "unmerged": ctx.model}
    if ctx.method.can_merge:
        models["merged"] = ctx.merged()
    prompt = {k: v.to(ctx.device) for k, v in ctx.task.fixed_batch(1, ctx.length).items()}
    pad_id = getattr(getattr(ctx.base, "config", None), "pad_token_id", None)
    n, names = int(ctx.s["generation_tokens"]), list(models)
    ttft: dict[str, list[float]] = {k: [] for k in names}
    per_token: dict[str, list[float]] = {k: [] for k in names}
    for m in models.values():
        m.eval()
        generate_timed(m, prompt, n, ctx.device, ctx.autocast, pad_id)  # warm-up
    for i in range(int(ctx.s["generation_repeats"])):
        for k in names[i % len(names):] + names[: i % len(names)]:  # rotated, as the latency rounds
            a, b = generate_timed(models[k], prompt, n, ctx.device, ctx.autocast, pad_id)
            ttft[k].append(a)
            per_token[k].append(b)
    fig: dict[str, Any] = {"gen_new_tokens": n, "gen_noise_frac": 0.0}
    for k in names:
        t, d = latency_summary(ttft[k]), latency_summary(per_token[k])
        fig[f"gen_ttft_ms_{k}"] = t["median_ms"]
        fig[f"gen_tokens_per_s_{k}"] = 1e3 / d["median_ms"]
        fig["gen_noise_frac"] = max(fig["gen_noise_frac"], t["noise_rel"], d["noise_rel"])
    return fig


# -- the step the run calls ---------------------------------------------------------------------------

depends_on_weights = serving_depends_on_weights
WEIGHT_PARTS = ("merge_precision",)  # the part whose logit differences depend_on_weights


def measure(method: Method, info: ModelInfo, model: nn.Module, base: nn.Module | None, task: Any, config: Mapping[str, Any],
            device: torch.device, autocast, only: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    """Every serving figure of a trained (unmerged) model; None when switched off. Each part's
    wall time is recorded in `measure_s`, so its cost per run is visible. `only` names the parts
    to measure (the others are left out); a run measuring only the weight parts copies the merge
    variants' test scores and measures their logit differences alone."""
    s = settings(config)
    if not s["enabled"]:
        return None
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    spent: dict[str, float] = {}
    if base is None:
        return {"skipped": {"all": "needs a copy of the base model (measure.latency_keep_base=false keeps none)"}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adapter"
        try:
            if method.serving["load"]:  # a method without a loadable adapter (full fine-tuning) writes nothing
                method.save(model, path)
        except Exception as e:  # recorded; the parts that read the adapter then say they failed too
            skipped["save"] = f"failed: {type(e).__name__}: {e}"
        ctx = ServingContext(method, info, model, base, task, path, s, device, autocast,
                             int(config["measure"]["latency_length"]), int(config["eval_batch_size"]),
                             score_merges=only is None)
        parts: dict[str, Callable[[], Any]] = {
            "batch1": lambda: batch1_latency(ctx),
            "load": lambda: adapter_load(ctx),
            "adapters": lambda: adapters_on_one_base(ctx),
            "merge_precision": lambda: merge_precision(ctx, config["task"]),
            "generation": lambda: generation(ctx),
        }
        for name, part in parts.items():
            if only is not None and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                got = part()
                fig, more = got if isinstance(got, tuple) else (got, {})
                out.update(fig)
                skipped.update(more)
            except Unsupported as e:
                skipped[name] = str(e)
            except Exception as e:  # a measurement that fails is recorded; the run's other figures stand
                skipped[name] = f"failed: {type(e).__name__}: {e}"
            spent[name] = time.perf_counter() - t0
    return {**out, "skipped": skipped, "measure_s": spent}


def base_copy(model: nn.Module, kept: nn.Module | None, config: Mapping[str, Any]) -> nn.Module | None:
    """The untouched base the serving step loads adapters onto: the latency bench's frozen copy
    where it keeps one, else a copy of its own (taken before the adapter is applied); None when
    serving is off."""
    if not settings(config)["enabled"] or not config["measure"].get("latency_keep_base", True):
        return None  # a model too large to hold twice
    return kept if kept is not None else copy.deepcopy(model).requires_grad_(False)
