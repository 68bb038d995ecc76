"""What a model YAML would say, read from the model itself: for `model=hf model.name=ORG/NAME` (or a
saved model folder), which has no YAML of its own.

* kind: a causal LM where the checkpoint's `architectures` name a `...ForCausalLM` (or its
  model_type is a causal LM's in transformers), else an encoder classifier;
* head_modules: the top-level modules a sequence-classification model adds to its backbone
  (`score` for decoder LMs, `classifier` for BERT/RoBERTa, `pre_classifier` and `classifier` for
  DistilBERT);
* target_presets: `attn_qv` from peft's own default LoRA targets for the model_type, and
  `all_linear`: every linear layer of the repeated blocks (not the heads, the LM head or a pooler). `attn_all`, `mlp`
  and the bottleneck adapters' sites are left to a YAML: no rule names them across architectures.
"""
from __future__ import annotations

import re
from typing import Any

from torch import nn

from peftbench.methods.base import ConfigError


def kind_of(config: Any) -> str:
    """causal_lm where the checkpoint's architectures are a causal LM's (`...ForCausalLM`, GPT-2's
    `GPT2LMHeadModel`, any class transformers maps as one); without architectures, where its model
    type has a causal LM class and no masked-LM one (BERT has both: an encoder)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    causal_classes = {c for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for c in ([v] if isinstance(v, str) else v)}
    archs = [str(a) for a in getattr(config, "architectures", None) or []]
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) or a in causal_classes for a in archs):
        return "causal_lm"
    if archs:
        return "classifier"
    model_type = getattr(config, "model_type", "")
    causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return "causal_lm" if causal else "classifier"


def head_modules(seq_cls: nn.Module) -> list[str]:
    """Top-level modules with weights beside the backbone (`base_model_prefix`)."""
    backbone = getattr(seq_cls, "base_model_prefix", "")
    return [n for n, m in seq_cls.named_children() if n != backbone and any(True for _ in m.parameters())]


def _alternation(leaves: list[str], in_blocks: bool = False) -> str:
    """A pattern for layers whose last name part is one of `leaves` (inside a numbered block)."""
    return (r"\.\d+\.(?:.*\.)?(" if in_blocks else r"\.(") + "|".join(re.escape(x) for x in sorted(set(leaves))) + r")$"


def target_presets(linear_names: tuple[str, ...], model_type: str, heads: list[str]) -> dict[str, list[str]]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    skip = {*heads, "lm_head"}
    # the linear layers of the repeated blocks (`layers.3.`, `layer.3.`, `h.3.`): not the heads, the
    # LM head or a pooler
    body = [n for n in linear_names if n.split(".")[0] not in skip and re.search(r"\.\d+\.", n)]
    if not body:
        raise ConfigError(f"model type {model_type!r} has no linear layers to adapt outside its head; write a conf/model YAML for it")
    leaves = {n.rsplit(".", 1)[-1] for n in body}
    presets = {"all_linear": [_alternation(sorted(leaves), in_blocks=True)]}
    # peft's default targets for the type, else the query and value projections by their usual
    # names (DistilBERT's q_lin/v_lin, ...): a model type peft does not list still gets attn_qv
    qv = PEFT_DEFAULTS.get(model_type) or next((list(pair) for pair in QV_NAMES if set(pair) <= leaves), None)
    if qv:
        presets["attn_qv"] = [_alternation(list(qv))]
    return presets


QV_NAMES = (("q_proj", "v_proj"), ("query", "value"), ("q_lin", "v_lin"), ("q", "v"), ("Wq", "Wv"))


def check_kind(name: str, configured: str, derived: str) -> None:
    if configured != derived:
        what = "a causal LM" if derived == "causal_lm" else "an encoder (no ...ForCausalLM in its architectures)"
        raise ConfigError(f"model {name} is {what}: set model.kind={derived}")
