"""GLUE and user-file classification tasks through the real loading code (load_dataset on local
files in the distributed formats), their label mapping, split carving and one-line errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from peftbench.experiments.data import build_task, validate_task
from peftbench.experiments.models.tiny_llama import build_tokenizer
from peftbench.methods.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent (a fresh clone has no ../shared)")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def task_cfg(name: str, **over):
    cfg = yaml.safe_load((ROOT / "conf" / "task" / f"{name}.yaml").read_text())
    for k, v in over.items():
        cfg[k] = v
    return cfg


WORDS = ["the", "red", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "blue", "sky", "was", "not", "\"quoted", "null"]


def sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 3))


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class ConstModel(torch.nn.Module):
    """Predicts class `c` for every example (a stand-in model for metric arithmetic)."""

    def __init__(self, c: int, n: int):
        super().__init__()
        self.c, self.n = c, n

    def forward(self, input_ids, **_):
        logits = torch.zeros(input_ids.shape[0], self.n)
        logits[:, self.c] = 1.0
        return type("Out", (), {"logits": logits})()


# -- GLUE TSVs as distributed -------------------------------------------------------------------

def test_sst2_tsv_quoting_off_and_splits(tmp_path, tok):
    # GLUE's SST-2: header `sentence<TAB>label`, a space before the tab, bare quotes, "null" text.
    train = write(tmp_path / "train.tsv", ["sentence\tlabel"] + [f"{sentence(i)} \t{i % 2}" for i in range(100)])
    dev = write(tmp_path / "dev.tsv", ["sentence\tlabel", "null \t0", "a \"bare quote \t1", "fine \t1"])
    cfg = task_cfg("sst2", data_files={"train": str(train), "validation": str(dev)}, validation_split_percentage=10)
    validate_task(cfg)
    t = build_task(cfg, tok, 32)
    assert t.label_names == ["negative", "positive"]
    assert (t.size("train"), t.size("validation"), t.size("test")) == (90, 10, 3)  # dev.tsv is the test split
    assert t.splits["test"]["labels"].tolist() == [0, 1, 1]
    # "null" stays text (not NaN), the bare quote is kept (quoting off)
    assert tok.decode(t.splits["test"]["input_ids"][0], skip_special_tokens=True).startswith("null")
    assert "\"bare" in tok.decode(t.splits["test"]["input_ids"][1], skip_special_tokens=True)
    again = build_task(cfg, tok, 32)  # the carved validation split is the same every time
    assert torch.equal(again.splits["validation"]["input_ids"], t.splits["validation"]["input_ids"])
    # a training subset does not change the validation split
    small = build_task({**cfg, "max_train_samples": 7}, tok, 32)
    assert small.size("train") == 7 and torch.equal(small.splits["validation"]["input_ids"], t.splits["validation"]["input_ids"])


def test_rte_string_labels_map_to_hub_ids(tmp_path, tok):
    rows = ["index\tsentence1\tsentence2\tlabel"] + [f"{i}\t{sentence(i)}\t{sentence(i + 1)}\t{'entailment' if i % 3 else 'not_entailment'}" for i in range(30)]
    train = write(tmp_path / "train.tsv", rows)
    dev = write(tmp_path / "dev.tsv", rows[:1] + ["0\tit rains\tit is wet\tnot_entailment", "1\ta b\tc d\tentailment"])
    cfg = task_cfg("rte", data_files={"train": str(train), "validation": str(dev)})
    validate_task(cfg)
    t = build_task(cfg, tok, 32)
    assert t.label_names == ["entailment", "not_entailment"]  # nyu-mll/glue rte ClassLabel order
    assert t.splits["test"]["labels"].tolist() == [1, 0]
    assert t.size("validation") == 3 and t.size("train") == 27
    # a sentence pair: both sentences reach the model
    text = tok.decode(t.splits["test"]["input_ids"][0], skip_special_tokens=True)
    assert "it rains" in text and "it is wet" in text


def test_mrpc_distributed_header_and_f1(tmp_path, tok):
    head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    train = write(tmp_path / "train.tsv", [head] + [f"{i % 2}\t{100 + i}\t{200 + i}\t{sentence(i)}\t{sentence(i + 2)}" for i in range(40)])
    dev = write(tmp_path / "dev.tsv", [head, "1\t1\t2\tone\tuno", "0\t3\t4\ttwo\tdos", "1\t5\t6\tthree\ttres", "1\t7\t8\tfour\tcuatro"])
    cfg = task_cfg("mrpc", data_files={"train": str(train), "validation": str(dev)})
    validate_task(cfg)
    t = build_task(cfg, tok, 32)
    assert t.label_names == ["not_equivalent", "equivalent"]
    assert t.splits["test"]["labels"].tolist() == [1, 0, 1, 1]
    m = t.evaluate(ConstModel(1, 2), "test", 2, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))  # tp 3, fp 1, fn 0


def test_glue_errors(tmp_path):
    train = write(tmp_path / "train.tsv", ["text\tlabel", "a \t0"])
    with pytest.raises(ConfigError, match=r"has no column 'sentence'; its columns: text, label"):
        validate_task(task_cfg("sst2", data_files={"train": str(train), "validation": str(train)}))
    with pytest.raises(ConfigError, match="test labels are hidden"):
        validate_task(task_cfg("sst2", data_files={"train": str(train), "validation": str(train), "test": str(train)}))
    with pytest.raises(ConfigError, match="task.data_files.validation .* is not"):
        validate_task(task_cfg("sst2", data_files={"train": str(train), "validation": None}))


@pytest.mark.slow
@needs_shared
def test_real_sst2_dev_is_the_test_split(tok):
    cfg = task_cfg("sst2", data_files={"train": str(SHARED / "sst2" / "train.tsv"), "validation": str(SHARED / "sst2" / "dev.tsv")},
                   max_train_samples=64)
    validate_task(cfg)
    t = build_task(cfg, tok, 16)
    assert t.size("test") == 872 and t.size("train") == 64
    assert t.size("validation") == round(0.05 * 67349)
    labels = t.splits["test"]["labels"]
    assert (int((labels == 0).sum()), int((labels == 1).sum())) == (428, 444)  # GLUE SST-2 dev


# -- the user's own files -------------------------------------------------------------------

def test_csv_string_labels_sorted_and_carved(tmp_path, tok):
    rows = ["text,label"] + [f"{sentence(i).replace(chr(34), '')},{['pos', 'neg', 'neutral'][i % 3]}" for i in range(50)]
    f = write(tmp_path / "d.csv", rows)
    cfg = task_cfg("csv", train_file=str(f))
    validate_task(cfg)
    t = build_task(cfg, tok, 16)
    assert t.label_names == ["neg", "neutral", "pos"]
    assert (t.size("train"), t.size("validation"), t.size("test")) == (40, 5, 5)
    ids = torch.cat([t.splits[s]["labels"] for s in ("train", "validation", "test")])
    assert sorted(ids.tolist()) == sorted(["neg", "neutral", "pos"].index(["pos", "neg", "neutral"][i % 3]) for i in range(50))


def test_jsonl_numeric_labels_sort_as_numbers_and_pairs(tmp_path, tok):
    import json

    tr = tmp_path / "train.jsonl"
    tr.write_text("".join(json.dumps({"a": sentence(i), "b": sentence(i + 1), "y": [10, 2, 1][i % 3]}) + "\n" for i in range(30)))
    te = tmp_path / "test.jsonl"
    te.write_text(json.dumps({"a": "x", "b": "y", "y": 10}) + "\n" + json.dumps({"a": "p", "b": "q", "y": 1}) + "\n")
    cfg = task_cfg("jsonl", train_file=str(tr), test_file=str(te), text_columns=["a", "b"], label_column="y", validation_split_percentage=0)
    validate_task(cfg)
    t = build_task(cfg, tok, 16)
    assert t.label_names == ["1", "2", "10"]  # numbers sort as numbers, not as strings
    assert t.splits["test"]["labels"].tolist() == [2, 0]
    assert t.size("validation") == 0 and t.size("train") == 30


def test_user_file_errors(tmp_path):
    good = write(tmp_path / "d.csv", ["text,label", "a,x", "b,y"])
    with pytest.raises(ConfigError, match=r"task.train_file: file .*nope.csv does not exist"):
        validate_task(task_cfg("csv", train_file=str(tmp_path / "nope.csv")))
    with pytest.raises(ConfigError, match="task.train_file is required"):
        validate_task(task_cfg("csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        validate_task(task_cfg("csv", train_file=str(tmp_path / "empty.csv")))
    with pytest.raises(ConfigError, match=r"has no column 'review'; its columns: text, label"):
        validate_task(task_cfg("csv", train_file=str(good), text_columns=["review"]))
    with pytest.raises(ConfigError, match="one or two columns"):
        validate_task(task_cfg("csv", train_file=str(good), text_columns=["a", "b", "c"]))
    header_only = write(tmp_path / "h.csv", ["text,label"])
    with pytest.raises(ConfigError, match="empty"):
        validate_task(task_cfg("csv", train_file=str(header_only)))
    with pytest.raises(ConfigError, match="empty"):
        build_task(task_cfg("csv", train_file=str(header_only)), build_tokenizer(), 8)


def test_unseen_test_label_is_an_error(tmp_path, tok):
    tr = write(tmp_path / "tr.csv", ["text,label"] + [f"t{i},{'ab'[i % 2]}" for i in range(10)])
    te = write(tmp_path / "te.csv", ["text,label", "u,a", "v,c"])
    with pytest.raises(ConfigError, match=r"task.test_file .*label 'c' \(row 1\) never appears in the training labels \(a, b\)"):
        build_task(task_cfg("csv", train_file=str(tr), test_file=str(te)), tok, 8)


def test_generation_task_needs_a_causal_lm():
    with pytest.raises(ConfigError, match="needs a causal LM"):
        validate_task(task_cfg("gsm8k", data_files={"train": None}), {"model": {"name": "minilm", "kind": "classifier"}, "task": {}})
    with pytest.raises(ConfigError, match="unknown task builder"):
        validate_task({"builder": "nope"})


@pytest.mark.slow
def test_cli_bad_task_file_is_one_line_exit_2(tmp_path, forked_cli):
    """Needs prepare() to call validate_task: no model is loaded, one error line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    p = forked_cli.run(["run", "model=tiny-llama", "task=csv", f"task.train_file={tmp_path}/missing.csv", "steps=2",
                        f"results_dir={tmp_path}"], env=env)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"peftbench: error: task.train_file: file {tmp_path}/missing.csv does not exist; check the path")


@pytest.mark.slow
def test_cli_label_found_only_when_reading_data_exits_2_with_one_line(tmp_path, forked_cli):
    """An unseen test label is found when the data is built (after prepare), still before any
    model is loaded: a single run says so in one line and exits 2; the failed record stays."""
    tr = write(tmp_path / "tr.csv", ["text,label"] + [f"t{i},{'ab'[i % 2]}" for i in range(10)])
    te = write(tmp_path / "te.csv", ["text,label", "u,a", "v,c"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    p = forked_cli.run(["run", "model=tiny-llama", "task=csv", f"task.train_file={tr}", f"task.test_file={te}", "steps=2",
                        "progress=false", f"results_dir={tmp_path / 'r'}"], env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftbench: error: task.test_file") and "'c'" in lines[0], p.stderr
    [rec] = [json.loads(f.read_text()) for f in (tmp_path / "r").glob("*.json")]
    assert rec["status"] == "failed" and rec["error"].startswith("ConfigError")


def test_hub_branch_loads_a_dataset_repo_laid_out_like_the_hub(tmp_path, tok):
    """The branch that runs for `nyu-mll/glue` (no data_files): load_dataset(path, name) on a
    local folder laid out as the hub repo is (per-config parquet files named by a dataset-card
    config, ClassLabel labels), so the hub code path itself runs, offline."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})
    (tmp_path / "sst2").mkdir()
    for split, n in (("train", 60), ("validation", 12)):
        rows = {"sentence": [sentence(i) for i in range(n)], "label": [i % 2 for i in range(n)], "idx": list(range(n))}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "sst2" / f"{split}-00000-of-00001.parquet"))
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: sst2\n  data_files:\n"
                                        "  - split: train\n    path: sst2/train-*\n  - split: validation\n    path: sst2/validation-*\n---\n")
    cfg = task_cfg("sst2", dataset={"path": str(tmp_path), "name": "sst2", "revision": None})
    validate_task(cfg)
    t = build_task(cfg, tok, 16)
    assert t.label_names == ["negative", "positive"]
    assert t.size("test") == 12 and t.size("validation") == 3 and t.size("train") == 57  # 5% of train carved off
    assert t.splits["test"]["labels"].tolist() == [i % 2 for i in range(12)]
