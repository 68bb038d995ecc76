"""Forgetting: how far training moved the model outside its task, on a fixed probe of general text
measured before and after training.

Causal LMs (generation tasks), on the probe's next-token predictions:
  * `ce_before_nats`, `ce_after_nats`, `ce_increase_nats`: mean per-token cross-entropy, after minus
    before, with the adapter active as it would be deployed (unmerged, the run's precision);
  * `kl_base_tuned_nats`: mean per-token KL(base || tuned) of the next-token distributions. The
    base model's log-probabilities are kept from the before-pass in float16 (32 texts x 64 tokens
    x a 49k vocabulary is ~200 MB, half of float32; no second copy of the model is needed).
Classifiers (classification tasks): `hidden_drift_cos`, the mean over probe texts of
1 - cosine(mean-pooled last hidden state before, after). It reads the representation under the
head, which every method re-learns from scratch, so it says how much of the pretrained encoder a
method kept; a linear probe scores 0 by construction.

The probe (conf/config.yaml `forgetting:`): `texts` windows of `tokens` tokens, evenly spaced over
a text source. Default source: the Python language reference shipped with CPython
(`pydoc_data.topics`, PSF licence), English prose present on every machine. `data_files` points
at real text instead: .txt (paragraphs), .json (an array of strings or of records) or .jsonl, a
record's string fields joined. Forward passes only: no random numbers are drawn.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from peftbench.methods.base import ConfigError

MAX_SOURCE_CHARS = 2_000_000  # enough for any probe; a huge file is read only this far
DEFAULT_PROBE = "pydoc_data.topics"


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(config.get("forgetting") or {})


def validate(config: Mapping[str, Any]) -> None:
    """Before any weights load: knobs in range, the probe file present and not empty."""
    f = settings(config)
    if not f.get("enabled", True):
        return
    for key in ("texts", "tokens", "batch_size"):
        v = f.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"forgetting.{key} must be a positive integer, got {v!r}")
    if f["tokens"] < 2:
        raise ConfigError("forgetting.tokens must be at least 2 (one next-token prediction)")
    if f.get("data_files"):
        from peftbench.experiments.data.files import check_file

        path = check_file(f["data_files"], "forgetting.data_files")
        if not source_texts(path):
            raise ConfigError(f"forgetting.data_files: {path} holds no text")


def _strings(record: Any) -> list[str]:
    if isinstance(record, str):
        return [record]
    if isinstance(record, Mapping):
        return [v for v in record.values() if isinstance(v, str) and v.strip()]
    return []


def source_texts(path: Path | None) -> list[str]:
    """The probe's source as a list of texts (records or paragraphs)."""
    if path is None:
        from pydoc_data.topics import topics

        return [topics[k] for k in sorted(topics)]
    raw = path.read_text(encoding="utf-8", errors="replace")[:MAX_SOURCE_CHARS]
    suffix = path.suffix.lower()
    if suffix == ".json" and raw.lstrip().startswith("["):
        try:
            rows = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"forgetting.data_files: {path} is not valid JSON ({e}); use .txt for plain text") from None
        return ["\n".join(_strings(r)) for r in rows if _strings(r)]
    if suffix in {".json", ".jsonl"}:
        out = []
        for line in raw.splitlines():
            if line.strip():
                try:
                    out.append("\n".join(_strings(json.loads(line))))
                except json.JSONDecodeError:
                    break  # the last line cut by MAX_SOURCE_CHARS
        return [t for t in out if t.strip()]
    return [p.strip() for p in raw.split("\n\n") if p.strip()]


def _frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after one input's text."""
    plain = tokenizer("probe", add_special_tokens=False)["input_ids"]
    full = tokenizer("probe", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    return [], []


def probe_ids(tokenizer, texts: list[str], n: int, length: int, special: bool = False) -> torch.Tensor:
    """`n` windows of `length` token ids, evenly spaced over the source read as one stream. With
    `special` each window is framed as the tokenizer frames one input (an encoder's [CLS] ... [SEP]),
    its text cut to keep `length` ids in all."""
    sep = tokenizer.eos_token or "\n\n"
    ids = tokenizer(sep.join(texts), add_special_tokens=False)["input_ids"]
    prefix, suffix = _frame(tokenizer) if special else ([], [])
    frame = len(prefix) + len(suffix)
    inner = length - frame
    if inner < 1:
        raise ConfigError(f"forgetting.tokens={length} leaves no room for text beside the model's {frame} special tokens")
    windows = len(ids) // inner
    if windows < 1:
        raise ConfigError(f"the forgetting probe has {len(ids)} tokens, fewer than forgetting.tokens={length}")
    n = min(n, windows)
    starts = [round(i * (windows - 1) / max(n - 1, 1)) * inner for i in range(n)]
    rows = [ids[s : s + inner] for s in starts]
    rows = [prefix + r + suffix for r in rows]
    return torch.tensor(rows, dtype=torch.long)


class ForgettingMeter:
    """before(model) on the base model, after(model) on the trained one; same probe, same passes."""

    def __init__(self, config: Mapping[str, Any], tokenizer, task_kind: str, device: torch.device, autocast):
        f = settings(config)
        path = Path(str(f["data_files"])).expanduser() if f.get("data_files") else None
        self.kind = "causal_lm" if task_kind == "generation" else "classifier"
        self.ids = probe_ids(tokenizer, source_texts(path), int(f["texts"]), int(f["tokens"]),
                             special=self.kind == "classifier")
        self.batch_size, self.device, self.autocast = int(f["batch_size"]), device, autocast
        self.probe = str(path) if path else DEFAULT_PROBE
        self.base: list[torch.Tensor] = []
        self.ce_before: float | None = None

    def _batches(self):
        for i in range(0, len(self.ids), self.batch_size):
            ids = self.ids[i : i + self.batch_size].to(self.device)
            yield ids, torch.ones_like(ids)

    @torch.no_grad()
    def _outputs(self, model: nn.Module) -> list[torch.Tensor]:
        """Per batch: next-token log-probs (causal LM) or mean-pooled last hidden states."""
        was_training = model.training
        model.eval()
        out = []
        for ids, mask in self._batches():
            with self.autocast():
                res = model(input_ids=ids, attention_mask=mask, output_hidden_states=self.kind == "classifier")
            # prompt methods prepend virtual tokens to the outputs: compare the text's own positions
            n = ids.shape[1]
            if self.kind == "causal_lm":
                out.append(torch.log_softmax(res.logits[:, -n:][:, :-1].float(), dim=-1).cpu())
            else:
                h = res.hidden_states[-1][:, -n:].float()
                m = mask.unsqueeze(-1).to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1)).cpu())
        model.train(was_training)
        return out

    def _ce(self, logprobs: list[torch.Tensor]) -> float:
        total, n = 0.0, 0
        for lp, (ids, _) in zip(logprobs, self._batches()):
            target = ids[:, 1:].cpu()
            total += -lp.gather(-1, target.unsqueeze(-1)).sum().item()
            n += target.numel()
        return total / n

    def before(self, model: nn.Module) -> None:
        out = self._outputs(model)
        if self.kind == "causal_lm":
            self.ce_before = self._ce(out)
            out = [lp.half() for lp in out]
        self.base = out

    def after(self, model: nn.Module) -> dict[str, Any]:
        out = self._outputs(model)
        common = {"kind": self.kind, "probe": self.probe, "probe_texts": int(self.ids.shape[0]),
                  "probe_tokens": int(self.ids.shape[1])}
        if self.kind == "classifier":
            cos = torch.cat([nn.functional.cosine_similarity(b, a, dim=-1) for b, a in zip(self.base, out)])
            return {**common, "primary": "hidden_drift_cos", "hidden_drift_cos": float((1 - cos).mean())}
        ce_after = self._ce(out)
        kl_sum, n = 0.0, 0
        for base, tuned in zip(self.base, out):
            # both sides rounded alike, so that an unchanged model scores exactly 0
            base, tuned = base.float(), tuned.half().float()
            kl_sum += (base.exp() * (base - tuned)).sum().item()
            n += base.shape[0] * base.shape[1]
        return {**common, "primary": "ce_increase_nats", "ce_before_nats": self.ce_before, "ce_after_nats": ce_after,
                "ce_increase_nats": ce_after - self.ce_before, "kl_base_tuned_nats": kl_sum / n}
