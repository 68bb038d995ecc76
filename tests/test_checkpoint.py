"""Training checkpoints: a run stopped mid-training resumes at its last checkpoint and ends with the
numbers of a run that was never stopped (experiments/checkpoint.py)."""
from __future__ import annotations

import signal

import pytest

from peftbench.experiments import checkpoint, progress, record
from peftbench.experiments.run import execute, prepare
from peftbench.experiments.signals import Interrupted
from tests.conftest import compose

TINY = ["model=tiny-llama", "steps=8", "measure.latency=false", "progress=false", "task.n_train=64",
        "task.n_validation=16", "task.n_test=16", "precision=fp32", "torch_threads=1"]


def stop_at(step: int):
    """A listener that stops the run as SIGTERM would, when `step` (0-based) has just finished."""
    def listener(s, loss, dt):
        if s == step:
            raise Interrupted(signal.SIGTERM)
    return listener


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adalora"])  # adalora: the method's own state between steps
def test_a_stopped_run_resumes_with_the_numbers_of_an_unstopped_one(method, tmp_path, monkeypatch):
    overrides = [f"method={method}", "checkpoint_every_steps=3", *TINY]
    if method == "lora":
        overrides.append("method.dropout=0.1")  # dropout draws from the random state a checkpoint restores
    if method == "adalora":  # a budget schedule whose pruning and final masking fall inside 8 steps
        overrides += ["method.tinit_frac=0.125", "method.tfinal_frac=0.25"]
    whole = execute(prepare(compose([*overrides, f"results_dir={tmp_path / 'whole'}"])))
    assert whole["status"] == "ok"
    assert whole["checkpoint"] == {"every_steps": 3, "resumed_from_step": 0, "train_s_before_resume": 0.0}
    from peftbench.experiments.fields import BY_PATH  # every figure a record holds is a declared field

    assert all(f"checkpoint.{k}" in BY_PATH for k in whole["checkpoint"])

    plan = prepare(compose([*overrides, f"results_dir={tmp_path / 'stopped'}"]))
    saved = checkpoint.path_for(plan.config["results_dir"], plan.run_id)
    monkeypatch.setattr(progress, "LISTENERS", [stop_at(4)])  # after step 5 of 8: the last checkpoint is at 3
    with pytest.raises(Interrupted):
        execute(plan)
    assert record.read(plan.path)["status"] == "interrupted"
    kept = checkpoint.load(saved, plan.run_id, 8)
    assert saved.exists() and kept["step"] == 3
    if method == "adalora":
        assert kept["method"]["ipt"]  # the importance scores at step 3 are in the checkpoint

    monkeypatch.setattr(progress, "LISTENERS", [])
    resumed = execute(prepare(compose([*overrides, f"results_dir={tmp_path / 'stopped'}"])))
    assert resumed["status"] == "ok"
    assert resumed["checkpoint"]["every_steps"] == 3 and resumed["checkpoint"]["resumed_from_step"] == 3
    assert 0 < resumed["checkpoint"]["train_s_before_resume"] == pytest.approx(kept["train_s"])
    assert resumed["loss_curve"] == whole["loss_curve"]
    assert resumed["metrics"] == whole["metrics"] and resumed["items"] == whole["items"]
    assert resumed["run_id"] == whole["run_id"]  # the interval is not part of the id
    assert not saved.exists()  # a finished run leaves no checkpoint behind


@pytest.mark.slow
def test_adalora_state_between_steps_survives_a_checkpoint():
    import torch

    from peftbench.experiments.run import adapt, load_for

    plan = prepare(compose(["method=adalora", *TINY]))
    _, task, model = load_for(plan)
    model = adapt(plan, model, task)
    batch = next(task.train_batches(1, 4, seed=0))
    model(**batch).loss.backward()
    plan.method.on_step(model, 2)  # inside the budget schedule: scores are updated
    state = plan.method.step_state(model)
    assert state["ipt"] and set(state["ipt"]) == set(state["exp_avg_unc"])

    _, task, fresh = load_for(plan)
    fresh = adapt(plan, fresh, task)
    assert not plan.method.step_state(fresh)["ipt"]
    plan.method.load_step_state(fresh, state)
    again = plan.method.step_state(fresh)
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        assert all(torch.equal(again[key][n], state[key][n]) for n in state[key])
    assert again["rank_pattern"] == state["rank_pattern"]


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_the_model_starts_the_run_over(tmp_path, capsys):
    """A checkpoint written by other code (another method's tensors under this run's name) is
    named and set aside: the run starts at step 0 instead of failing at every start."""
    import torch

    overrides = ["method=lora", "checkpoint_every_steps=3", *TINY, f"results_dir={tmp_path}"]
    plan = prepare(compose(overrides))
    saved = checkpoint.path_for(tmp_path, plan.run_id)
    saved.parent.mkdir(parents=True)
    torch.save({"run_id": plan.run_id, "step": 3, "weights": {"w": torch.zeros(2)}, "optimizer": {"param_groups": []}}, saved)
    rec = execute(plan)
    assert rec["status"] == "ok" and rec["checkpoint"]["resumed_from_step"] == 0
    assert "does not fit this run" in capsys.readouterr().err
    assert not saved.exists()


def test_a_checkpoint_of_another_run_or_a_torn_file_is_not_resumed(tmp_path):
    path = tmp_path / "x.pt"
    assert checkpoint.load(path, "run", 8) is None
    path.write_bytes(b"not a checkpoint")
    assert checkpoint.load(path, "run", 8) is None
    import torch

    torch.save({"run_id": "other", "step": 2}, path)
    assert checkpoint.load(path, "run", 8) is None
    torch.save({"run_id": "run", "step": 8}, path)
    assert checkpoint.load(path, "run", 8) is None  # nothing left to run: start over


TINY_RL = ["model=tiny-llama", "task=procedural", "objective=grpo", "steps=4", "batch_size=2", "task.n_train=32",
           "task.n_validation=8", "task.n_test=8", "measure.latency=false", "measure.serving.enabled=false",
           "progress=false", "precision=fp32", "torch_threads=1", "checkpoint_every_steps=2"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full_ft"])  # an adapter saved by peft, and a whole model
def test_a_stopped_grpo_run_resumes_from_trls_checkpoint_with_the_numbers_of_an_unstopped_one(method, tmp_path, monkeypatch):
    """trl saves and restores the weights, optimizer, schedule, random state (the sampling of
    completions draws from it) and logged history; the run resumes from the newest whole one."""
    overrides = [f"method={method}", *TINY_RL]
    whole = execute(prepare(compose([*overrides, f"results_dir={tmp_path / 'whole'}"])))
    assert whole["status"] == "ok", whole.get("error")
    assert whole["checkpoint"]["resumed_from_step"] == 0

    plan = prepare(compose([*overrides, f"results_dir={tmp_path / 'stopped'}"]))
    folder = checkpoint.trainer_folder_for(plan.config["results_dir"], plan.run_id)
    monkeypatch.setattr(progress, "LISTENERS", [stop_at(2)])  # after step 3 of 4: the last checkpoint is at 2
    with pytest.raises(Interrupted):
        execute(plan)
    assert record.read(plan.path)["status"] == "interrupted"
    assert (folder / "checkpoint-2" / "peftbench.json").exists()
    (folder / "checkpoint-3").mkdir()  # a newer folder a kill cut short, without its note: passed over

    monkeypatch.setattr(progress, "LISTENERS", [])
    resumed = execute(prepare(compose([*overrides, f"results_dir={tmp_path / 'stopped'}"])))
    assert resumed["status"] == "ok", resumed.get("error")
    assert resumed["checkpoint"]["resumed_from_step"] == 2 and resumed["checkpoint"]["train_s_before_resume"] > 0
    assert resumed["loss_curve"] == whole["loss_curve"]
    for key in ("reward_mean", "reward_std", "kl_to_reference", "completion_tokens_mean"):
        assert resumed["objective"][key] == whole["objective"][key], key
    assert len(resumed["objective"]["generation_s"]) == 4  # the steps before the stop, kept in the checkpoint
    assert resumed["metrics"] == whole["metrics"] and resumed["items"] == whole["items"]
    assert not folder.exists()  # a finished run leaves no checkpoint behind


def test_a_grpo_run_resumes_only_from_a_whole_checkpoint_of_its_own(tmp_path):
    import json

    from peftbench.experiments.grpo import CHECKPOINT_NOTE, last_checkpoint

    def make(step: int, note: dict | str | None) -> None:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if note is not None:
            (folder / CHECKPOINT_NOTE).write_text(note if isinstance(note, str) else json.dumps(note))

    assert last_checkpoint(tmp_path / "absent", "run", 8) is None
    make(2, {"run_id": "run", "step": 2, "train_s": 1.0, "generation_s": [0.1, 0.1]})
    make(4, {"run_id": "run", "step": 4, "train_s": 2.0, "generation_s": [0.1] * 4})
    make(6, '{"run_id": "ru')  # torn while written
    make(7, None)  # trl's files without our note: cut short before the note
    (tmp_path / "checkpoint-x").mkdir()
    path, note = last_checkpoint(tmp_path, "run", 8)
    assert path.name == "checkpoint-4" and note["train_s"] == 2.0
    assert last_checkpoint(tmp_path, "other", 8) is None  # another run's
    assert last_checkpoint(tmp_path, "run", 4)[0].name == "checkpoint-2"  # none left to run at 4 of 4


def test_a_grpo_run_without_checkpoints_saves_nothing():
    """trl saves a whole checkpoint at the end of training under any save strategy but "no"."""
    from peftbench.experiments.grpo import save_settings

    assert save_settings(0) == {"save_strategy": "no"}
    assert save_settings(5) == {"save_strategy": "steps", "save_steps": 5, "save_total_limit": 2}
