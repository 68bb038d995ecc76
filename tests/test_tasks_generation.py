"""Generative tasks: answer extraction, ROUGE-L, response-only loss masks, left-padded greedy
generation, and a short end-to-end run on the tiny Llama through the real loading code."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from peftbench.experiments.data import build_task, validate_task
from peftbench.experiments.data.generation import extract_answer, extract_last_number, normalize_number, rouge_l
from peftbench.experiments.models.tiny_llama import build_tokenizer
from peftbench.methods.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent (a fresh clone has no ../shared)")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def task_cfg(name: str, **over):
    cfg = yaml.safe_load((ROOT / "conf" / "task" / f"{name}.yaml").read_text())
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def math_rows(n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        a, b = 3 + i, 4 + 2 * i
        out.append({"question": f"Sam has {a} pens and buys {b} more. How many pens?", "answer": f"{a}+{b}=<<{a}+{b}={a + b}>>{a + b}\n#### {a + b}"})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_answer_extraction():
    assert extract_answer("so 3+4=7\n#### 7") == "7"
    assert extract_answer("The answer is $1,250.") == "1250"
    assert extract_answer("The answer is: 12.50") == "12.5"
    assert extract_answer("#### -3") == "-3"
    assert extract_answer("I think 42") is None  # strict: needs #### or "The answer is"
    assert extract_last_number("first 3, then 42.") == "42"
    assert normalize_number("7.0") == normalize_number("7") == "7"
    assert normalize_number("abc") is None


@pytest.mark.slow
def test_rouge_l_matches_rouge_score():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("", "x") == 0.0
    # LCS "the cat the mat" = 4 of 6 and 4 of 5 tokens
    assert rouge_l("the cat was on the mat", "The cat, the mat!") == pytest.approx(2 * (4 / 6) * (4 / 4) / ((4 / 6) + 1))
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for pred, ref in [("Paris is the capital of France.", "The capital of France is Paris."), ("1, 2, 3 go", "go 3 2 1"), ("abc def", "xyz")]:
        assert rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)


def test_loss_masks_cover_only_the_response(tmp_path, tok):
    tr = write_jsonl(tmp_path / "train.jsonl", math_rows(6))
    te = write_jsonl(tmp_path / "test.jsonl", math_rows(3, start=50))
    cfg = task_cfg("gsm8k", data_files={"train": str(tr), "test": str(te), "validation": None}, validation_split_percentage=0, max_new_tokens=4)
    validate_task(cfg)
    t = build_task(cfg, tok, 160)
    assert t.kind == "generation" and t.num_labels is None and t.size("test") == 3 and t.size("validation") == 0
    ex = t.examples["train"][0]
    assert ex.prompt.endswith("\nAnswer:") and ex.reference == "7" and ex.response.endswith("#### 7")
    ids, mask, labels = (t.train[k][0] for k in ("input_ids", "attention_mask", "labels"))
    n_prompt = len(tok(ex.prompt)["input_ids"])
    n_resp = len(tok(ex.response, add_special_tokens=False)["input_ids"]) + 1  # + eos
    assert (labels[:n_prompt] == -100).all()  # prompt not trained on
    assert torch.equal(labels[n_prompt : n_prompt + n_resp], ids[n_prompt : n_prompt + n_resp])  # response is
    assert labels[n_prompt + n_resp - 1] == tok.eos_token_id  # the model learns to stop
    assert (labels[n_prompt + n_resp :] == -100).all() and (mask[n_prompt + n_resp :] == 0).all()  # padding not
    batch = next(t.train_batches(1, 4, seed=0))
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # padding columns trimmed


def test_truncation_keeps_the_response_and_the_answer_cue(tmp_path, tok):
    tr = write_jsonl(tmp_path / "train.jsonl", math_rows(4))
    cfg = task_cfg("gsm8k", data_files={"train": str(tr), "test": str(tr), "validation": None}, validation_split_percentage=0, max_new_tokens=4)
    t = build_task(cfg, tok, 40)
    labels, ids = t.train["labels"][0], t.train["input_ids"][0]
    assert (labels != -100).sum() >= 20  # at least half the budget for the response
    assert tok.decode(ids[labels == -100]).endswith("Answer:")  # the prompt lost its start, not its end


class Echo(torch.nn.Module):
    """A stand-in model whose greedy continuation is fixed text (tests decoding and scoring)."""

    def __init__(self, tok, texts):
        super().__init__()
        self.tok, self.texts, self.calls = tok, list(texts), []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        self.calls.append((input_ids.clone(), attention_mask.clone(), max_new_tokens, kw))
        rows = []
        for _ in range(input_ids.shape[0]):
            cont = self.tok(self.texts.pop(0), add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id, 5, 6]
            rows.append(cont)
        width = max(map(len, rows))
        cont = torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, cont], 1)


def test_generation_left_pads_and_scores_exact_match(tmp_path, tok):
    tr = write_jsonl(tmp_path / "train.jsonl", math_rows(4))
    te = write_jsonl(tmp_path / "test.jsonl", [{"question": "q" * (1 + 5 * i), "answer": f"x\n#### {i + 7}"} for i in range(3)])
    cfg = task_cfg("gsm8k", data_files={"train": str(tr), "test": str(te), "validation": None}, validation_split_percentage=0, max_new_tokens=9)
    t = build_task(cfg, tok, 64)
    model = Echo(tok, ["so #### 7", "The answer is 8.\n\nQuestion: #### 99", "I guess 9"])
    m = t.evaluate(model, "test", 8, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    assert m == {"exact_match": pytest.approx(2 / 3), "exact_match_flexible": pytest.approx(1.0), "n": 3}
    ids, mask, mnt, kw = model.calls[0]
    assert mnt == 9 and kw["do_sample"] is False and kw["num_beams"] == 1
    assert (mask[:, -1] == 1).all() and mask[0, 0] == 0  # left padding: every prompt ends at the last column
    fixed = t.fixed_batch(4, 16)
    assert fixed["input_ids"].shape == (4, 16) and torch.equal(fixed["input_ids"][0], fixed["input_ids"][3])


def test_instruction_scores(tmp_path, tok):
    rows = [{"instruction": f"Say the word number {i}.", "input": "" if i % 2 else "politely", "output": f"word {i}"} for i in range(12)]
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps(rows))
    cfg = task_cfg("instructions", data_files={"train": str(f)}, validation_split_percentage=10, test_split_percentage=20, max_new_tokens=6)
    validate_task(cfg)
    t = build_task(cfg, tok, 128)
    assert (t.size("train"), t.size("validation"), t.size("test")) == (9, 1, 2)
    assert "### Input:\npolitely" in t.examples["train"][0].prompt or "### Input:" not in t.examples["train"][0].prompt
    refs = [e.reference for e in t.examples["test"]]
    m = t.evaluate(Echo(tok, [refs[0], "something else"]), "test", 8, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    assert m["exact_match"] == 0.5 and m["rouge_l"] == pytest.approx((1.0 + rouge_l("something else", refs[1])) / 2)


def test_generation_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="max_new_tokens must be a positive integer"):
        validate_task(task_cfg("gsm8k", max_new_tokens=0))
    bad = write_jsonl(tmp_path / "x.jsonl", [{"q": "a", "a": "b"}])
    with pytest.raises(ConfigError, match=r"has no column 'question', 'answer'; its columns: q, a"):
        validate_task(task_cfg("gsm8k", data_files={"train": str(bad), "test": str(bad), "validation": None}))
    with pytest.raises(ConfigError, match="max_eval_samples must be null, auto or a positive integer"):
        validate_task(task_cfg("instructions", max_eval_samples=-1))


@pytest.mark.slow
@needs_shared
def test_real_gsm8k_and_instructions(tok):
    g = task_cfg("gsm8k", data_files={"train": str(SHARED / "gsm8k" / "train.jsonl"), "test": str(SHARED / "gsm8k" / "test.jsonl"), "validation": None},
                 max_train_samples=8, max_eval_samples=None)
    validate_task(g)
    t = build_task(g, tok, 32)  # every one of the 1,319 test answers has a final number
    assert t.size("test") == 1319 and t.size("validation") == round(0.05 * 7473) and t.size("train") == 8
    assert t.examples["test"][0].reference == "18"  # Janet's ducks
    i = task_cfg("instructions", data_files={"train": str(SHARED / "instructions" / "instruction-data.json")}, max_train_samples=8)
    validate_task(i)
    t = build_task(i, tok, 32)
    assert t.size("validation") == min(55, 32 if not torch.cuda.is_available() else 55)  # the book's 935/55/110, capped on CPU


@pytest.mark.slow
@needs_shared
def test_tiny_llama_end_to_end_on_real_instructions(tmp_path):
    from hydra import compose, initialize_config_dir

    from peftbench.experiments.run import execute, prepare

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "model=tiny-llama", "task=instructions", "method=lora", "steps=3", "batch_size=2", "max_length=96",
            "precision=fp32", "device=cpu", "progress=false", f"results_dir={tmp_path}", "measure.latency=false",
            f"task.data_files.train={SHARED / 'instructions' / 'instruction-data.json'}", "task.max_train_samples=16",
            "task.max_eval_samples=3", "task.max_new_tokens=5"])
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    validate_task(config["task"], config)
    rec = execute(prepare(config))
    assert rec["status"] == "ok", rec.get("error")
    assert set(rec["metrics"]) == {"validation", "test"} and rec["metrics"]["test"]["n"] == 3
    assert 0 <= rec["metrics"]["test"]["rouge_l"] <= 1 and all(math.isfinite(x) for x in rec["loss_curve"])
    assert rec["lm_eval"] is None
