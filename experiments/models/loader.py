"""Load models and tokenizers from a model config (conf/model/*.yaml)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from peftbench.experiments.models.derive import check_kind, head_modules, kind_of, target_presets
from peftbench.methods.base import ConfigError, ModelInfo


def source_of(model_cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model's source block. `source` is either the block itself or the name of one of the
    model's `sources` (e.g. model.source=hub picks the original checkpoint over a bundled copy)."""
    source = model_cfg["source"]
    if isinstance(source, str):
        sources = model_cfg.get("sources") or {}
        if source not in sources:
            raise ConfigError(f"model {model_cfg.get('name')} has no source {source!r}; use one of {sorted(sources)}")
        return sources[source]
    return source


def model_path(source: Mapping[str, Any]) -> str:
    """Resolve a model source to something `from_pretrained` takes: a folder or a hub id."""
    kind = source.get("kind")
    if kind == "package":
        try:
            pkg = importlib.import_module(source["package"])
        except ImportError:
            raise ConfigError(f"model package {source['package']!r} is not installed; run `make setup`") from None
        return str(pkg.get_model_path())
    if kind == "local":
        path = Path(str(source["path"])).expanduser()
        if not (path / "config.json").exists():
            raise ConfigError(f"model folder {path} has no config.json; point model.source.path at a saved model")
        return str(path)
    if kind == "hub":
        return str(source["id"])
    if kind == "gguf_package":
        from peftbench.experiments.models.gguf_package import converted_path

        return str(converted_path(source))
    if kind == "tiny_llama":
        from peftbench.experiments.models.tiny_llama import tiny_llama_path

        return str(tiny_llama_path(source))
    raise ConfigError(f"unknown model.source.kind {kind!r}; use package, gguf_package, local, hub or tiny_llama")


def _auto_class(task_kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task_kind == "classification" else AutoModelForCausalLM


def _revision(source: Mapping[str, Any]) -> dict[str, Any]:
    return {"revision": source["revision"]} if source.get("revision") else {}


def load_tokenizer(model_cfg: Mapping[str, Any]):
    from transformers import AutoTokenizer

    source = source_of(model_cfg)
    tok = AutoTokenizer.from_pretrained(model_path(source), **_revision(source))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _linear_names(model: nn.Module) -> tuple[str, ...]:
    from transformers.pytorch_utils import Conv1D

    return tuple(n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D)))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def model_config(model_cfg: Mapping[str, Any]):
    """The model's transformers config. A hub model whose YAML carries an `arch:` block (the
    published config's architecture fields) gets its config built from that block when the hub
    is offline or cannot be reached, so targets validate offline against real layer names."""
    from transformers import AutoConfig

    arch = model_cfg.get("arch")
    source = source_of(model_cfg)
    if arch and source.get("kind") == "hub" and _hub_offline():
        return AutoConfig.for_model(**dict(arch))
    if arch and source.get("kind") == "gguf_package":
        from peftbench.experiments.models.gguf_package import is_converted

        if not is_converted(source):  # checking a config must not start the conversion
            return AutoConfig.for_model(**dict(arch))
    try:
        return AutoConfig.from_pretrained(model_path(source), **_revision(source))
    except (OSError, ValueError) as e:
        if arch:
            return AutoConfig.for_model(**dict(arch))
        if model_cfg.get("derive_from_checkpoint"):
            raise ConfigError(f"cannot read the config of {model_cfg.get('name')}: {type(e).__name__}; with the hub offline "
                              f"(HF_HUB_OFFLINE=1) a hub id must be in the local hub cache: download it once "
                              f"(huggingface-cli download {model_cfg.get('name')}), or give model.name a saved model folder") from None
        raise ConfigError(
            f"cannot read the config of model {model_cfg.get('name')} ({model_path(source)}): {type(e).__name__}; "
            "go online once, or add an arch: block (model_type, hidden_size, ...) to its conf/model YAML"
        ) from None


def build_model_info(model_cfg: Mapping[str, Any], task_kind: str, num_labels: int | None) -> ModelInfo:
    """Layer names and sizes from the model's config alone, on the meta device: no weights read."""
    config = model_config(model_cfg)
    if num_labels:
        config.num_labels = num_labels
    with torch.device("meta"):
        skeleton = _auto_class(task_kind).from_config(config)
    classify = task_kind == "classification"
    linear = _linear_names(skeleton)
    heads = list(model_cfg.get("head_modules") or ())
    presets = {k: list(v) for k, v in (model_cfg.get("target_presets") or {}).items()}
    if model_cfg.get("derive_from_checkpoint"):  # model=hf: what a YAML would say, from the model itself
        check_kind(str(model_cfg["name"]), str(model_cfg["kind"]), kind_of(config))
        if classify and not heads:
            heads = head_modules(skeleton)
        presets = {**target_presets(linear, str(getattr(config, "model_type", "")), heads), **presets}
    return ModelInfo(
        name=str(model_cfg["name"]),
        kind=str(model_cfg["kind"]),
        task_type="SEQ_CLS" if classify else "CAUSAL_LM",
        linear_names=linear,
        hidden_size=int(config.hidden_size),
        head_modules=tuple(heads) if classify else (),
        target_presets=presets,
        adapter_sites=dict(model_cfg.get("adapter_sites") or {}),
        model_type=str(getattr(config, "model_type", "")),
    )


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(
    model_cfg: Mapping[str, Any],
    task_kind: str,
    num_labels: int | None,
    device: torch.device,
    extra: Mapping[str, Any],
    pad_token_id: int | None,
) -> nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()  # the "newly initialised head" report is expected
    source = source_of(model_cfg)
    kwargs: dict[str, Any] = {"dtype": DTYPES[str(model_cfg.get("dtype", "fp32"))], **_revision(source), **extra}
    if num_labels:
        kwargs["num_labels"] = num_labels
    quantised = "quantization_config" in kwargs
    if quantised and device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
    model = _auto_class(task_kind).from_pretrained(model_path(source), **kwargs)
    if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    if not quantised:
        model.to(device)
    return model
