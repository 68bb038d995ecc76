"""One run over two CPU processes (gloo): DDP and FSDP2 through `peftbench run distributed=...`,
which starts torchrun itself. Rank 0 writes the one record; the loss curve equals the
one-process run with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from peftbench.methods.base import ConfigError
from tests.conftest import compose

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
# fp32 and no dropout: the ranks then compute the one-process run's step exactly, up to the order
# of floating-point sums (each rank draws its own dropout masks, so with dropout the curves agree
# only in distribution)
TINY = ["model=tiny-llama", "steps=4", "batch_size=8", "precision=fp32", "measure.latency=false", "progress=false",
        "forgetting.texts=8", "forgetting.tokens=32", "measure.metrics_before=false", "task.n_train=64", "task.n_validation=8", "task.n_test=16"]
# relative difference allowed between the 2-process and the 1-process loss at every step
LOSS_RTOL = 1e-5


def peftbench(forked_cli, *args: str, env: dict | None = None, timeout: int = 150) -> subprocess.CompletedProcess:
    """`peftbench run ARGS`, forked from the session's warm driver (tests/forked_cli.py); the ranks
    torchrun starts are processes of their own."""
    return forked_cli.run(["run", *args], env=env or ENV, timeout=timeout)


def records(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def one_process_run(method: str, tmp_path: Path) -> dict:
    from peftbench.experiments.run import execute, prepare

    return execute(prepare(compose([f"method={method}", "++method.dropout=0.0", f"results_dir={tmp_path / 'one'}", *TINY])))


def assert_same_as_one_process(rec: dict, tmp_path: Path) -> None:
    """Same losses within LOSS_RTOL, and rank 0's evaluation of the trained model (under FSDP
    rebuilt whole from the gathered shards) predicts what the one-process model predicts."""
    one = one_process_run(rec["method"], tmp_path)
    assert rec["loss_curve"] == pytest.approx(one["loss_curve"], rel=LOSS_RTOL)
    assert leaves(rec["metrics"]) == pytest.approx(leaves(one["metrics"])), rec["method"]
    # the forgetting probe's log-likelihoods are continuous: they see any difference in the model
    assert leaves(rec["forgetting"]) == pytest.approx(leaves(one["forgetting"]), rel=1e-4), rec["method"]


def leaves(node: object, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested record section, by dotted path."""
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): float(node)} if isinstance(node, (int, float)) and not isinstance(node, bool) else {}


def assert_two_rank_record(rec: dict) -> None:
    assert rec["status"] == "ok", rec.get("error")
    assert rec["distributed"]["world_size"] == 2 and rec["distributed"]["backend"] == "gloo"
    cost = rec["cost"]
    per_rank = cost["peak_train_mem_growth_bytes_per_rank"]
    assert len(per_rank) == 2 and all(isinstance(b, int) and b > 0 for b in per_rank)
    assert cost["peak_train_mem_growth_bytes"] == max(per_rank)
    assert len(cost["peak_train_rss_bytes_per_rank"]) == 2
    # whole-job throughput counts both ranks' tokens: twice what each device does
    assert cost["train_tokens_per_s_median"] == pytest.approx(2 * cost["train_tokens_per_s_per_device_median"])
    assert cost["train_tokens_per_s_median"] > 0 and 0 < cost["mfu_frac"] < 1
    assert rec["provenance"]["torch_threads"] == 1  # 2 processes share 2 cores
    assert rec["metrics"]["test"]  # evaluated once, on rank 0


@pytest.mark.slow
def test_a_crashing_rank_fails_the_run_without_hanging(tmp_path, forked_cli):
    """Rank 1's optimizer raises on its first step (a sitecustomize on its path stands in for a
    crash); rank 0 must not wait for it forever, and the run is recorded as failed with rank
    1's error."""
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import torch\n"
        "    def boom(self, *a, **k):\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "    torch.optim.AdamW.step = boom\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(plug), ENV.get("PYTHONPATH", "")])}
    out = peftbench(forked_cli, "method=full_ft", "distributed=ddp", "distributed.timeout_s=60", f"results_dir={tmp_path / 'r'}", *TINY,
                    env=env, timeout=300)
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    [rec] = records(tmp_path / "r")
    assert rec["status"] == "failed"
    assert "rank 1" in rec["error"] and "injected failure on rank 1" in rec["error"]
    assert "peftbench: run failed" in out.stderr


# On the ranks' path (sitecustomize): after every step each rank draws from the global generator
# (rank r draws r + 1 numbers, so that the ranks' random states part ways, as dropout masks make
# them do) and logs the state it reaches and the step's loss, exactly; with
# PEFTBENCH_TEST_STOP_AFTER=N every rank is sent SIGTERM after step N (0-based), as a preemption
# stops a job; PEFTBENCH_TEST_STEP_SLEEP=S makes every step last S seconds longer
RANK_PLUG = (
    "import hashlib, os, signal, time\n"
    "if os.environ.get('RANK') is not None and os.environ.get('PEFTBENCH_TEST_RNG_LOG'):\n"
    "    from peftbench.experiments import progress\n"
    "    def draw_and_stop(step, loss, dt):\n"
    "        import torch\n"
    "        torch.rand(int(os.environ['RANK']) + 1)\n"
    "        digest = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:12]\n"
    "        with open(os.environ['PEFTBENCH_TEST_RNG_LOG'] + '.' + os.environ['RANK'], 'a') as f:\n"
    "            f.write(f'{step} {digest} {float(loss).hex()}\\n')\n"
    "        time.sleep(float(os.environ.get('PEFTBENCH_TEST_STEP_SLEEP', 0)))\n"
    "        if step == int(os.environ.get('PEFTBENCH_TEST_STOP_AFTER', -1)):\n"
    "            os.kill(os.getpid(), signal.SIGTERM)\n"
    "    progress.LISTENERS.append(draw_and_stop)\n")


@pytest.mark.slow
def test_fsdp_lora_matches_one_process_and_a_stopped_run_resumes_exactly_where_it_stopped(tmp_path, forked_cli):
    """FSDP over two processes, stopped by SIGTERM to every rank after its last step (of 4), before
    any record: the checkpoint of step 3 (the last of three, each replacing the one before) holds
    every rank's random state. The next start resumes there and computes step 4 exactly as the
    stopped run did, loss and random state on each
    rank (the ranks' generators part ways here, as dropout masks make them do): the weights, the
    optimizer state and the schedule came back, each rank's shards written and read by that rank
    alone. The finished run matches the one-process run (DDP saves and restores through the same
    functions, with whole tensors: the launcher test below resumes one)."""
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "sitecustomize.py").write_text(RANK_PLUG)
    run = ["method=lora", "++method.dropout=0.0", "distributed=fsdp", "checkpoint_every_steps=1", *TINY,
           f"results_dir={tmp_path / 'r'}"]

    def env(name: str, **extra: str) -> dict:
        return {**ENV, "PYTHONPATH": os.pathsep.join([str(plug), ENV.get("PYTHONPATH", "")]),
                "PEFTBENCH_TEST_RNG_LOG": str(tmp_path / name), **extra}

    def steps(name: str) -> list[list[str]]:
        return [(tmp_path / f"{name}.{rank}").read_text().split("\n")[:-1] for rank in (0, 1)]

    stopped = peftbench(forked_cli, *run, env=env("stopped", PEFTBENCH_TEST_STOP_AFTER="3"))
    assert stopped.returncode == 1, (stopped.stdout + stopped.stderr)[-3000:]
    [failed] = records(tmp_path / "r")  # never ok; failed, since nothing here can tell a preemption from a killed rank
    assert failed["status"] == "failed" and "rank 0: interrupted by SIGTERM" in failed["error"], failed["error"]
    import torch

    [saved] = (tmp_path / "r" / ".checkpoints").glob("*.pt")
    state = torch.load(saved, weights_only=False)
    assert (state["step"], state["world_size"], len(state["rng_per_rank"])) == (3, 2, 2)
    # no process held the whole state: the file names a folder of each rank's shards, and holds no
    # tensor; the folders of steps 1 and 2 went once the file named the next one
    assert "weights" not in state and "optimizer" not in state
    [shards] = [p for p in (tmp_path / "r" / ".checkpoints").iterdir() if p.is_dir()]
    assert shards.name == state["shards"] and (shards / ".metadata").exists() and len(list(shards.glob("*.distcp"))) == 2
    before = steps("stopped")
    assert [len(lines) for lines in before] == [4, 4] and before[0] != before[1]

    resumed = peftbench(forked_cli, *run, env=env("resumed"))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    [rec] = records(tmp_path / "r")
    assert rec["status"] == "ok" and rec["checkpoint"]["resumed_from_step"] == 3, rec.get("error")
    # step 4 again, on each rank: the same loss and random state, bit for bit; the record's curve is
    # the stopped run's, its first three steps from the checkpoint
    assert steps("resumed") == [lines[3:] for lines in before]
    assert rec["loss_curve"] == [float.fromhex(line.split()[2]) for line in before[0]]
    assert not saved.exists() and not shards.exists()
    assert_two_rank_record(rec)
    assert rec["config"]["distributed"]["sharding"] == "full_shard"
    assert_same_as_one_process(rec, tmp_path)
    # FSDP's estimate holds a half of the weights per device: below one process's
    assert rec["cost"]["est_weight_bytes"] < rec["cost"]["weight_bytes"]


@pytest.mark.slow
def test_a_stopped_launcher_stops_its_ranks_and_the_next_start_resumes_its_checkpoint(tmp_path, forked_cli):
    """SIGTERM to the `peftbench` that started torchrun, and to it alone (the ranks run in sessions
    of their own), once the DDP run has saved its step-1 checkpoint: it passes the signal on through
    torchrun, every rank stops and rank 0 records the run as interrupted, and no rank is left running
    to write over the checkpoint. The next start resumes there, and its finished run matches the
    one-process run: the weights, the optimizer state and the schedule came back on both ranks."""
    import signal
    import time

    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "sitecustomize.py").write_text(RANK_PLUG)
    log = tmp_path / "rng"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(plug), ENV.get("PYTHONPATH", "")]), "PEFTBENCH_TEST_RNG_LOG": str(log)}
    args = ["run", "method=lora", "++method.dropout=0.0", "distributed=ddp", "checkpoint_every_steps=1",
            f"results_dir={tmp_path / 'r'}", *TINY]
    # each step lasts 5 s longer: the signal lands while step 2 runs, after step 1's checkpoint
    run = forked_cli.start(args, env={**env, "PEFTBENCH_TEST_STEP_SLEEP": "5"}, new_session=True)
    folder = tmp_path / "r" / ".checkpoints"
    deadline = time.monotonic() + 240
    while not list(folder.glob("*.pt")) and run.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(folder.glob("*.pt")), "no checkpoint was written"
    os.kill(run.pid, signal.SIGTERM)
    out = run.wait(timeout=180)
    assert out.returncode == 128 + signal.SIGTERM, (out.stdout + out.stderr)[-3000:]
    assert "peftbench: interrupted by SIGTERM" in out.stderr
    [rec] = records(tmp_path / "r")
    assert rec["status"] == "interrupted" and rec["error"] == "interrupted by SIGTERM"
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(tmp_path) in p.read_bytes().decode(errors="replace")]
    assert not left, "ranks left running"
    import torch

    [saved] = folder.glob("*.pt")
    stopped_at = torch.load(saved, weights_only=False)["step"]
    assert 1 <= stopped_at < 4  # 1 unless the machine stalled for a whole step

    again = forked_cli.run(args, env=env, timeout=150)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    [rec] = records(tmp_path / "r")
    assert rec["status"] == "ok" and rec["checkpoint"]["resumed_from_step"] == stopped_at, rec.get("error")
    assert not saved.exists()
    assert_two_rank_record(rec)
    assert rec["distributed"]["strategy"] == "ddp"
    assert_same_as_one_process(rec, tmp_path)
    # the same run as a sweep finds its result by its id, and starts no torchrun
    done = forked_cli.run(["run", "-m", *args[1:]], env=env, timeout=60)
    assert done.returncode == 0 and "1 already done, 0 to launch" in done.stdout, (done.stdout + done.stderr)[-3000:]


@pytest.mark.parametrize("overrides, words", [
    (["distributed=ddp", "batch_size=7"], "does not split evenly over 2 processes"),
    (["distributed=fsdp", "method=qlora"], "FSDP cannot shard"),
    (["distributed=fsdp", "method=adalora"], "use distributed=ddp"),
    (["distributed=fsdp", "method=loraplus", "checkpoint_every_steps=10"], "builds its own optimizer"),
    (["distributed=ddp", "distributed.nnodes=2"], "starts from a launcher on every node"),
    (["distributed=ddp", "distributed.backend=nccl", "device=cpu"], "needs CUDA"),
    (["distributed=fsdp", "distributed.sharding=zero3"], "distributed.sharding must be one of full_shard, shard_grad_op"),
])
def test_impossible_combinations_are_refused_before_loading(overrides, words):
    from peftbench.experiments.run import prepare

    with pytest.raises(ConfigError, match=words):
        prepare(compose(["model=tiny-llama", *overrides]))


def test_a_worker_count_that_differs_from_the_config_is_refused(monkeypatch):
    from peftbench.experiments.run import prepare

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="started as 4 processes"):
        prepare(compose(["model=tiny-llama", "distributed=ddp"]))
    with pytest.raises(ConfigError, match="add distributed=ddp or distributed=fsdp"):
        prepare(compose(["model=tiny-llama"]))


def test_fsdp_estimate_shards_what_ddp_keeps_whole():
    """Parameters, gradients and optimizer states per device: divided by the world size under
    FSDP, whole under DDP (shards=1); activations follow the per-device batch either way."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftbench.experiments.meters import estimate_train_memory

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    one = estimate_train_memory(model, 8, 32, 2, shards=1)
    four = estimate_train_memory(model, 8, 32, 2, shards=4)
    for key in ("est_weight_bytes", "est_grad_bytes", "est_optimizer_bytes"):
        assert four[key] == one[key] // 4
    assert one["est_grad_bytes"] == sum(p.numel() for p in model.parameters()) * 4  # fp32 master weights
    assert four["est_activation_bytes"] == one["est_activation_bytes"]
    assert one["est_unsharded_layer_bytes"] == 0 < four["est_unsharded_layer_bytes"]
