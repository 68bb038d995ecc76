"""What needs a CUDA device: a small sweep with the CUDA memory fields, bf16 autocast, 4-bit QLoRA
on the GPU, and DDP over two GPUs where there are two. Skipped, with the reason, without CUDA;
scripts/gpu_check.sh runs these and the other CUDA-only tests in one go on a GPU machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
SMALL = ["model=minilm", "steps=30", "task.n_train=512", "task.n_validation=64", "task.n_test=256", "device=cuda",
         "measure=quick", "progress=false"]

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftbench", "run", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def records(d: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**ENV, "PY": sys.executable})
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.startswith("gpu_check: no CUDA device is visible") and len(out.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """lora, qlora and full_ft on MiniLM, bf16 autocast on the GPU, one run at a time."""
    d = tmp_path_factory.mktemp("gpu")
    out = run("-m", "method=lora,qlora,full_ft", "precision=bf16", f"results_dir={d}", *SMALL)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return records(d)


@pytest.mark.slow
@needs_cuda
def test_a_gpu_sweep_records_cuda_memory_and_learns(sweep):
    assert set(sweep) == {"lora", "qlora", "full_ft"}
    for method, rec in sweep.items():
        assert rec["status"] == "ok", (method, rec.get("error"))
        assert rec["provenance"]["device"].startswith("cuda"), method
        assert rec["precision"] == "bf16"
        cost = rec["cost"]
        assert rec["measurement"]["memory_kind"] == "cuda_peak_allocated", method
        assert cost["peak_train_reserved_bytes"] >= cost["peak_train_mem_growth_bytes"] > 0, method
        curve = rec["loss_curve"]
        assert sum(curve[-5:]) < sum(curve[:5]), method  # it learned on the GPU (five steps a side: one batch is noisy)


@pytest.mark.slow
@needs_cuda
def test_qlora_trains_4_bit_layers_on_the_gpu(sweep):
    """QLoRA's base layers are bitsandbytes 4-bit on the GPU: fewer weight bytes than LoRA's."""
    q, lora = sweep["qlora"], sweep["lora"]
    assert q["status"] == "ok"
    # on CPU the ratio is 0.59 (MiniLM's embeddings and head stay in full precision)
    assert q["cost"]["weight_bytes"] < 0.7 * lora["cost"]["weight_bytes"], (q["cost"]["weight_bytes"], lora["cost"]["weight_bytes"])


@pytest.mark.slow
@needs_cuda
def test_bf16_autocast_and_fp32_agree_on_the_gpu(sweep, tmp_path):
    """The same LoRA run in fp32: bf16 autocast changes the numbers a little, not the outcome."""
    out = run("method=lora", "precision=fp32", f"results_dir={tmp_path}", *SMALL)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    fp32 = records(tmp_path)["lora"]
    bf16 = sweep["lora"]
    assert abs(fp32["loss_curve"][-1] - bf16["loss_curve"][-1]) < 0.1 * max(fp32["loss_curve"][0], 1e-6)


@pytest.mark.slow
@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_over_two_gpus(tmp_path):
    out = run("method=lora", "precision=bf16", "distributed=ddp", "distributed.nproc_per_node=2", f"results_dir={tmp_path}", *SMALL)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    rec = records(tmp_path)["lora"]
    assert rec["status"] == "ok" and rec["distributed"]["world_size"] == 2
