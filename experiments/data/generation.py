"""Generative tasks on causal LMs: GSM8K-style math and Alpaca-format instruction tuning.

Training: each example is `prompt + response + eos`, tokenised as prompt and response separately
(so the prompt tokens at training are exactly those fed at generation), right-padded; labels are
-100 on the prompt and on padding, so the loss covers the response tokens only. When an example
is longer than max_length the prompt loses tokens from the left first (its end, the answer cue,
is kept) and the response keeps at least half the budget.

Evaluation: greedy decoding (no sampling, one beam), at most task.max_new_tokens new tokens,
prompts left-padded in batches, the generation cut at eos or at a stop string.
  * gsm8k: exact match of the final number. `exact_match` (strict) reads the number after
    `####` or `The answer is`; `exact_match_flexible` reads the last number in the generation
    (lm-eval's gsm8k strict/flexible filters). Numbers compare after removing `,` and `$`.
  * instructions: `exact_match` (after stripping and collapsing whitespace) and `rouge_l`
    (ROUGE-L F1 over lower-cased alphanumeric tokens, as rouge_score computes it without
    stemming), averaged over examples.
Each metrics dict also carries `n`, the number of examples scored.

Data (conf/task/gsm8k.yaml, instructions.yaml): the hub names (openai/gsm8k "main",
tatsu-lab/alpaca) or local files through task.data_files.<split>; splits a source lacks are
carved off train with a seeded permutation. task.max_eval_samples: auto = 32 examples per split
when no CUDA device is visible (generation on CPU is slow), every example otherwise.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from peftbench.experiments.data import files
from peftbench.experiments.data.base import task_builder, task_validator
from peftbench.methods.base import ConfigError, positive_int

CPU_EVAL_SAMPLES = 32


# -- metrics -------------------------------------------------------------------------------------

_NUMBER = r"-?[$0-9.,]*[0-9]"
_STRICT = [re.compile(r"####\s*(" + _NUMBER + ")"), re.compile(r"[Tt]he (?:final )?answer is:?\s*(" + _NUMBER + ")")]
_ANY_NUMBER = re.compile(_NUMBER)


def normalize_number(text: str | None) -> str | None:
    """'$1,000.00' -> '1000'; None when `text` is not a number."""
    if text is None:
        return None
    t = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    d = d.normalize()
    return format(d, "f") if d != d.to_integral() else str(int(d))


def extract_answer(text: str) -> str | None:
    """The number after the first `#### ` or `The answer is`, normalised; None if absent."""
    for pat in _STRICT:
        m = pat.search(text)
        if m:
            return normalize_number(m.group(1))
    return None


def extract_last_number(text: str) -> str | None:
    found = _ANY_NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def gsm8k_gold(answer: str) -> str:
    gold = extract_answer(answer)
    if gold is None:
        raise ConfigError(f"GSM8K answer has no final number after '####': {answer[-80:]!r}")
    return gold


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) by rouge_score, with its default tokens (lower-cased [a-z0-9]+, no
    stemming)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def normalize_text(text: str) -> str:
    return " ".join(text.split())


# -- the task ------------------------------------------------------------------------------------

@dataclass
class Example:
    prompt: str
    response: str  # the training target
    reference: str  # what a generation is scored against (gsm8k: the final number)


@dataclass
class RawGeneration:
    """What a generation builder returns; `build` tokenises it into a GenerationTask."""

    name: str
    scorer: str  # gsm8k | instructions
    splits: dict[str, list[Example]]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # the task YAML's declared metric names

    def build(self, tokenizer, max_length: int) -> "GenerationTask":
        return GenerationTask(self, tokenizer, max_length)


def _fit(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut prompt (from the left) and response (from the right) to fit max_length together."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    keep_resp = min(len(response), max(max_length - len(prompt), max_length // 2))
    keep_prompt = max_length - keep_resp
    return (prompt[len(prompt) - keep_prompt :] if keep_prompt else []), response[:keep_resp]


class GenerationTask:
    kind = "generation"
    num_labels = None

    def __init__(self, raw: RawGeneration, tokenizer, max_length: int):
        if tokenizer.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token (nor an eos token to pad with)")
        if tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer has no eos token; a generation task needs one to end responses")
        self.raw, self.tokenizer, self.max_length = raw, tokenizer, max_length
        self.scorer, self.max_new_tokens, self.stop = raw.scorer, raw.max_new_tokens, list(raw.stop)
        for name in ("train", "test"):
            if not raw.splits.get(name):
                raise ConfigError(f"task {raw.name} has no {name} examples; check the task's data files")
        self.examples = raw.splits
        self.outcomes: dict[str, list[float]] = {}
        # every generation metric is a mean over items: the outcomes are the first declared one's
        self.outcome_metric = (raw.metrics or ["exact_match"])[0]
        self.train = self._encode_train(raw.splits["train"])
        self.prompts = {s: [self._prompt_ids(e.prompt) for e in exs] for s, exs in raw.splits.items() if s != "train"}

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return ids[-self.max_length :]  # keep the end of the prompt: the question and the answer cue

    def _encode_train(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        tok, L, pad = self.tokenizer, self.max_length, self.tokenizer.pad_token_id
        ids = torch.full((len(examples), L), pad, dtype=torch.long)
        mask = torch.zeros((len(examples), L), dtype=torch.long)
        labels = torch.full((len(examples), L), -100, dtype=torch.long)
        cut = 0
        for i, ex in enumerate(examples):
            p = tok(ex.prompt, add_special_tokens=True)["input_ids"]
            r = tok(ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            fp, fr = _fit(p, r, L)
            cut += (len(fp), len(fr)) != (len(p), len(r))
            seq = fp + fr
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, len(fp) : len(seq)] = torch.tensor(fr)
        if cut / max(len(examples), 1) > 0.05:
            print(f"warning: {cut} of {len(examples)} {self.raw.name} training examples were cut to max_length={L}; "
                  f"raise max_length (e.g. max_length=512) for this task", file=sys.stderr, flush=True)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def size(self, split: str) -> int:
        return len(self.examples.get(split) or [])

    def train_batches(self, steps: int, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.train["labels"])
        gen = torch.Generator().manual_seed(seed)
        order, pos = torch.randperm(n, generator=gen), 0
        for _ in range(steps):
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            batch = {k: v[idx] for k, v in self.train.items()}
            width = int(batch["attention_mask"].sum(1).max())  # drop all-padding columns (right padding)
            yield {k: v[:, :width] for k, v in batch.items()}

    def _left_pad(self, seqs: list[list[int]], width: int | None = None) -> dict[str, torch.Tensor]:
        width = width or max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            s = s[-width:]
            if s:
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def cut(self, text: str) -> str:
        """A generation up to its first stop string."""
        for s in self.stop:
            i = text.find(s)
            if i >= 0:
                text = text[:i]
        return text

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, split: str, batch_size: int, device: torch.device, autocast) -> list[str]:
        """Greedy continuations of the split's prompts, decoded and cut at the stop strings."""
        prompts, out = self.prompts[split], []
        was_training = model.training
        model.eval()
        tok = self.tokenizer
        for i in range(0, len(prompts), batch_size):
            batch = {k: v.to(device) for k, v in self._left_pad(prompts[i : i + batch_size]).items()}
            with autocast():
                gen = model.generate(
                    **batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                )
            new = gen[:, batch["input_ids"].shape[1] :].cpu()
            for row in new:
                ids = row.tolist()
                if tok.eos_token_id in ids:
                    ids = ids[: ids.index(tok.eos_token_id)]
                out.append(self.cut(tok.decode(ids, skip_special_tokens=True)))
        model.train(was_training)
        return out

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        """The declared metrics (all the scorer knows when none are declared), plus `n`."""
        n = len(examples)
        pairs = list(zip(predictions, examples))
        if self.scorer == "gsm8k":
            compute = {"exact_match": lambda: sum(extract_answer(p) == e.reference for p, e in pairs) / n,
                       "exact_match_flexible": lambda: sum(extract_last_number(p) == e.reference for p, e in pairs) / n}
        else:
            compute = {"exact_match": lambda: sum(normalize_text(p) == normalize_text(e.reference) for p, e in pairs) / n,
                       "rouge_l": lambda: sum(rouge_l(p, e.reference) for p, e in pairs) / n}
        names = self.raw.metrics or list(compute)
        return {**{k: compute[k]() for k in names}, "n": n}

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int, device: torch.device, autocast) -> dict[str, float]:
        """The declared metrics on `split`; each item's score on the first declared metric is kept in
        `outcomes[split]` (the latest evaluation's), for the record's per-item outcomes."""
        predictions, examples = self.generate(model, split, batch_size, device, autocast), self.examples[split]
        self.outcomes[split] = [self.score([p], [e])[self.outcome_metric] for p, e in zip(predictions, examples)]
        return self.score(predictions, examples)

    def item_digest(self, split: str) -> str:
        import hashlib

        h = hashlib.sha256()
        for e in self.examples[split]:
            h.update(f"{e.prompt}\x00{e.reference}\x01".encode())
        return h.hexdigest()[:16]

    def fixed_batch(self, batch: int, length: int) -> dict[str, torch.Tensor]:
        """A fixed inference batch for latency: the first test prompts, left-padded to `length`."""
        prompts = self.prompts["test"]
        return self._left_pad([prompts[i % len(prompts)] for i in range(batch)], width=length)


# -- sources -------------------------------------------------------------------------------------

def _data_files(cfg: Mapping[str, Any]) -> dict[str, Path]:
    given = {k: v for k, v in (cfg.get("data_files") or {}).items() if v}
    unknown = sorted(set(given) - set(files.SPLITS))
    if unknown:
        raise ConfigError(f"task.data_files takes train, validation and test, got {unknown}")
    if given and "train" not in given:
        raise ConfigError(f"task.data_files.train is required when loading {cfg.get('name')} from local files")
    return {k: files.check_file(v, f"task.data_files.{k}") for k, v in given.items()}


def _validate(cfg: Mapping[str, Any], needed: list[str]) -> None:
    files.optional_count(cfg, "max_train_samples")
    files.optional_count(cfg, "max_eval_samples", allow_auto=True)
    mnt = cfg.get("max_new_tokens")
    if not positive_int(mnt):
        raise ConfigError(f"task.max_new_tokens must be a positive integer, got {mnt!r}")
    for key in ("validation_split_percentage", "test_split_percentage"):
        files.percentage(cfg, key)
    local = _data_files(cfg)
    if not local:
        if not cfg.get("dataset"):
            raise ConfigError("task.dataset (hub path) or task.data_files.train=PATH is required")
        files.hub_check(cfg["dataset"])
    if local and "test" not in local and not files.percentage(cfg, "test_split_percentage"):
        raise ConfigError(f"task {cfg.get('name')}: no test split; pass task.data_files.test=PATH or set task.test_split_percentage>0")
    for split, path in local.items():
        fmt = files.file_format(path, "json")
        files.require_columns(files.header_columns(path, fmt), needed, f"task.data_files.{split} ({path})")


def _load(cfg: Mapping[str, Any], needed: list[str]) -> dict[str, Any]:
    """Splits (train, validation?, test) as datasets, carved and capped."""
    local = _data_files(cfg)
    if local:
        ds = {}
        for split, path in local.items():
            ds[split] = files.load_files({split: path}, files.file_format(path, "json"))[split]
        where = {s: f"task.data_files.{s} ({p})" for s, p in local.items()}
    else:
        ds = dict(files.load_hub(cfg["dataset"]))
        where = {s: f"{cfg['dataset']['path']} {s}" for s in ds}
    if "train" not in ds:
        raise ConfigError(f"task {cfg.get('name')}: the data has no train split (it has {sorted(ds)})")
    for split, d in ds.items():
        if split in files.SPLITS:
            files.check_loaded_columns(d, needed, where[split])
    have = [s for s in ("validation", "test") if s in ds]
    if "test" not in have and not files.percentage(cfg, "test_split_percentage"):
        raise ConfigError(f"task {cfg.get('name')}: no test split; pass task.data_files.test=PATH or set task.test_split_percentage>0")
    splits = files.carve_splits(ds["train"], have, cfg)
    for s in have:
        splits[s] = ds[s]
    return files.finish_splits(splits, cfg, cpu_eval_default=CPU_EVAL_SAMPLES)


GSM8K_PROMPT = "Question: {question}\nAnswer:"


@task_validator("gsm8k")
def validate_gsm8k(cfg: Mapping[str, Any]) -> None:
    _validate(cfg, ["question", "answer"])


@task_builder("gsm8k", metrics=("exact_match", "exact_match_flexible"))
def gsm8k(cfg: Mapping[str, Any]) -> RawGeneration:
    splits = _load(cfg, ["question", "answer"])
    out = {}
    for split, ds in splits.items():
        out[split] = [Example(GSM8K_PROMPT.format(question=q.strip()), " " + a.strip(), gsm8k_gold(a))
                      for q, a in zip(ds["question"], ds["answer"])]
    return RawGeneration(name=str(cfg.get("name", "gsm8k")), scorer="gsm8k", splits=out,
                         max_new_tokens=int(cfg["max_new_tokens"]), stop=list(cfg.get("stop") or ["\n\nQuestion:", "\nQuestion:"]))


# The Stanford Alpaca prompt (the format of tatsu-lab/alpaca's `text` column).
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def alpaca_prompt(instruction: str, input: str | None) -> str:
    if input and input.strip():
        return ALPACA_PROMPT.format(instruction=instruction.strip(), input=input.strip())
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction.strip())


@task_validator("instructions")
def validate_instructions(cfg: Mapping[str, Any]) -> None:
    _validate(cfg, ["instruction", "output"])


@task_builder("instructions", metrics=("exact_match", "rouge_l"))
def instructions(cfg: Mapping[str, Any]) -> RawGeneration:
    splits = _load(cfg, ["instruction", "output"])
    out = {}
    for split, ds in splits.items():
        inputs = ds["input"] if "input" in ds.column_names else [""] * len(ds)
        out[split] = [Example(alpaca_prompt(i, x), o.strip(), o.strip()) for i, x, o in zip(ds["instruction"], inputs, ds["output"])]
    return RawGeneration(name=str(cfg.get("name", "instructions")), scorer="instructions", splits=out,
                         max_new_tokens=int(cfg["max_new_tokens"]), stop=list(cfg.get("stop") or ["\n### Instruction:"]))
