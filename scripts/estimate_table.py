"""The per-GPU memory estimate for the 8B configs: `python scripts/estimate_table.py` prints it,
`--write` puts it into docs/sweeps.md between its markers. Its models and rows are
conf/report/memory_estimate.yaml's.

Each model is built from its conf/model YAML on the meta device (no weights: the `arch:` block
offline), wrapped by each method as a run would wrap it, and measured by the same analytic
estimate a run records (experiments.meters.estimate_train_memory): one device's weights,
gradients, AdamW states, activations and autocast copies, with FSDP's shards and per-device
batch. An estimate, not a measurement: the records' measured peaks are the numbers to trust.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = yaml.safe_load((ROOT / "conf" / "report" / "memory_estimate.yaml").read_text())
MODELS = tuple(SPEC["models"])
METHODS = tuple((row["label"], list(row["overrides"])) for row in SPEC["rows"])
WORLD_SIZES = tuple(SPEC["world_sizes"])
GLOBAL_BATCH, SEQ = int(SPEC["global_batch"]), int(SPEC["seq_len"])
GPU_BYTES = int(SPEC["gpu_gib"]) * 2**30
FITS = 0.95 * GPU_BYTES  # room for the CUDA context and allocator fragmentation
MARK = "estimate-table"
DOC = ROOT / "docs" / "sweeps.md"


def wrapped_on_meta(model_name: str, overrides: list[str]) -> torch.nn.Module:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from peftbench.experiments.models.loader import DTYPES, build_model_info, model_config
    from peftbench.experiments.run import method_for

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=[f"model={model_name}", *overrides]), resolve=True)
    info = build_model_info(cfg["model"], "generation", None)
    method = method_for(cfg["method"])
    method.validate(info)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config(cfg["model"]), dtype=DTYPES[str(cfg["model"].get("dtype", "fp32"))])
        return method.wrap(model, info)


def per_device(model: torch.nn.Module, world: int, sharded: bool) -> int:
    from peftbench.experiments.meters import estimate_train_memory

    return estimate_train_memory(model, GLOBAL_BATCH // world, SEQ, act_bytes=2, shards=world if sharded else 1)["est_train_mem_bytes"]


def cell(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f}" + ("" if nbytes <= FITS else " ✗")


def fewest(sizes: dict[tuple[str, int], int]) -> str:
    """The fewest GPUs that hold the run; DDP where it fits (less communication), else FSDP."""
    if sizes[("one", 1)] <= FITS:
        return "1 GPU"
    for n in WORLD_SIZES:
        for strategy in ("ddp", "fsdp"):
            if sizes[(strategy, n)] <= FITS:
                return f"{strategy.upper()} × {n}"
    return f"more than {WORLD_SIZES[-1]} GPUs (or gradient checkpointing)"


def table() -> str:
    head = ["Model", "Method", "Trainable (M)", "1 GPU", *(f"DDP ×{n}" for n in WORLD_SIZES), *(f"FSDP ×{n}" for n in WORLD_SIZES), "Fewest 80 GB GPUs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model_name in MODELS:
        for method_name, overrides in METHODS:
            model = wrapped_on_meta(model_name, overrides)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            sizes = {("one", 1): per_device(model, 1, False)}
            sizes.update({(s, n): per_device(model, n, s == "fsdp") for s in ("ddp", "fsdp") for n in WORLD_SIZES})
            row = [model_name, method_name, f"{trainable / 1e6:,.1f}", cell(sizes[("one", 1)]),
                   *(cell(sizes[("ddp", n)]) for n in WORLD_SIZES), *(cell(sizes[("fsdp", n)]) for n in WORLD_SIZES), fewest(sizes)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write(readme: Path, text: str) -> None:
    body = readme.read_text()
    pattern = re.compile(rf"(<!-- {MARK} -->\n).*?(<!-- /{MARK} -->)", re.S)
    if not pattern.search(body):
        raise SystemExit(f"{readme}: no <!-- {MARK} --> ... <!-- /{MARK} --> markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    from peftbench.experiments.quiet import quiet

    quiet()
    text = table()
    if args.write:
        write(DOC, text)
    print(text, end="")


if __name__ == "__main__":
    main()
