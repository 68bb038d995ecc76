"""GPU model configs (conf/model/*.yaml) load and validate offline: the `arch:` block gives a
meta-device skeleton with the real layer names, and LoRA / QLoRA / Houlsby targets resolve.
CUDA-only measurement paths are tested where a CUDA device is visible."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from peftbench.experiments.data import validate_task
from peftbench.experiments.models.loader import build_model_info, model_config
from peftbench.experiments.run import prepare
from peftbench.methods.base import ConfigError, resolve_targets

ROOT = Path(__file__).resolve().parents[1]
GPU_MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if p.stem not in {"minilm", "tiny-llama", "smollm2-135m", "hf"})  # hf: tests/test_hf_model.py
LLMS = [m for m in GPU_MODELS if not m.startswith("roberta")]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def composed(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def test_the_expected_families_and_sizes_are_there():
    assert {"roberta-base", "roberta-large", "llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b", "qwen2.5-7b", "qwen3-0.6b", "qwen3-8b"} <= set(GPU_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", GPU_MODELS)
def test_gpu_model_config_prepares_offline(name, tmp_path):
    task = "synth"
    plans = {}
    for method in ("lora", "qlora", "houlsby"):
        config = composed(f"model={name}", f"method={method}", f"task={task}", f"results_dir={tmp_path}", "device=cpu")
        m = config["model"]
        assert m["source"]["kind"] == "hub" and m["source"]["revision"] == "main" and m["arch"]["model_type"]
        validate_task(config["task"], config)
        plans[method] = prepare(config)
    info = plans["lora"].info
    arch = config["model"]["arch"]
    assert info.hidden_size == arch["hidden_size"]
    layers = arch["num_hidden_layers"]
    q_v = resolve_targets("attn_qv", info)
    assert len(q_v) == 2 * layers and all(n.rsplit(".", 1)[1] in {"q_proj", "v_proj", "query", "value"} for n in q_v)
    assert len(resolve_targets("all_linear", info)) == (6 if name.startswith("roberta") else 7) * layers
    head = config["model"]["head_modules"][0]
    assert any(n == head or n.startswith(head + ".") for n in info.linear_names)  # the head exists in the skeleton
    assert not any(n.startswith(head) for n in q_v)  # and is never a LoRA target
    sites = plans["houlsby"].method.site_names(info)
    assert len(sites) == 2 * layers
    assert plans["qlora"].method.load_kwargs(torch.bfloat16, info)["quantization_config"].bnb_4bit_quant_type == "nf4"
    expected_dtype = "fp32" if name.startswith("roberta") else "bf16"
    assert config["model"]["dtype"] == expected_dtype


@pytest.mark.parametrize("name", ["llama-3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b"])
def test_llm_configs_prepare_for_generation(name, tmp_path):
    config = composed(f"model={name}", "method=lora", "task=gsm8k", f"results_dir={tmp_path}", "device=cpu",
                      "task.data_files.train=" + str(ROOT / "conf" / "lm_eval_tasks" / "peftbench_arith.jsonl"),
                      "task.data_files.test=" + str(ROOT / "conf" / "lm_eval_tasks" / "peftbench_arith.jsonl"))
    plan = prepare(config)
    assert plan.info.task_type == "CAUSAL_LM" and plan.info.head_modules == ()
    assert any(n.endswith("lm_head") for n in plan.info.linear_names)


def test_arch_block_is_used_offline_and_its_absence_is_one_line():
    m = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "qwen3-8b.yaml"))
    cfg = model_config(m)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim) == ("qwen3", 36, 8, 128)
    del m["arch"]
    m["source"]["id"] = "peftbench-test/no-such-model"
    with pytest.raises(ConfigError, match="cannot read the config of model qwen3-8b .* add an arch: block"):
        build_model_info(m, "classification", None)


def test_roberta_is_not_a_generation_model(tmp_path):
    config = composed("model=roberta-base", "method=lora", "task=gsm8k", f"results_dir={tmp_path}")
    with pytest.raises(ConfigError, match="needs a causal LM"):
        validate_task(config["task"], config)


# -- CUDA-only measurement paths --------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (MemoryMeter/latency on cuda)")


@needs_cuda
def test_cuda_memory_meter_counts_training_allocations():
    from peftbench.experiments.meters import MemoryMeter

    dev = torch.device("cuda")
    with MemoryMeter(dev) as mm:
        x = torch.empty(64 << 20, dtype=torch.uint8, device=dev)  # 64 MiB
        del x
    assert mm.result["memory_kind"] == "cuda_peak_allocated"
    assert mm.result["peak_train_mem_growth_bytes"] >= 64 << 20


def test_latency_waits_for_asynchronous_work(monkeypatch):
    """CUDA kernels run asynchronously: a forward returns before its work is done, and only a
    device sync waits for it. A fake device whose "kernels" finish only at sync tells timing with
    sync (the 20 ms of work) from timing without (microseconds), on any machine; a CUDA-only check
    of a positive median would pass either way."""
    import time

    from peftbench.experiments import meters

    pending = [0.0]

    class AsyncModel(torch.nn.Module):
        def forward(self, input_ids, **_):
            pending[0] += 0.02  # enqueue 20 ms of work and return at once, as a CUDA launch does
            return input_ids

    def sync() -> None:
        time.sleep(pending[0])
        pending[0] = 0.0

    monkeypatch.setattr(meters.latency, "synchronizer", lambda device: sync)
    out = meters.measure_latency(AsyncModel(), {"input_ids": torch.zeros(1)}, 1, 5, torch.device("cpu"), nullcontext)
    assert out["p10_ms"] >= 19, out  # every timed call includes its own work, none of the previous call's
    assert out["p90_ms"] < 60, out
