"""Bad input: one clear line, non-zero exit, before any model is loaded."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench.methods.base import ConfigError
from peftbench.experiments.run import prepare
from tests.conftest import ROOT, compose

# Every case below is a row of docs/bad-inputs.md, which scripts/bad_inputs.py writes; each test
# checks its own case's row against the line it got.
BAD_INPUTS_PAGE = ROOT / "docs" / "bad-inputs.md"
_ROW = re.compile(r"^\| `peftbench (.+?)` \| (\d+) \| `(.*)` \|$")
# A list of what is available (methods, models, tasks, studies, launchers, a model's layers) follows
# conf/ and the installed plugins (Hydra's own `ray` launchers come with `make setup-ray`): a new
# YAML must not need the page rewritten, so the check compares such a list by its place alone.
_AVAILABLE = re.compile(r"(available: )(?:[\w.+/-]+, )*[\w.+/-]+")


def documented() -> dict[str, tuple[int, str]]:
    text = BAD_INPUTS_PAGE.read_text(encoding="utf-8")
    block = text.split("<!-- bad-inputs -->", 1)[1].split("<!-- /bad-inputs -->", 1)[0]
    return {m[1]: (int(m[2]), m[3].replace("\\|", "|")) for m in map(_ROW.match, block.splitlines()) if m}


def _listless(line: str) -> str:
    return _AVAILABLE.sub(r"\1...", line)


def as_documented(line: str, data: Path | None = None, a_file: Path | None = None) -> str:
    """The line as the page shows it: data files by their bare names, the taken results path as
    FILE, the checkout as `.`."""
    if data is not None:
        line = line.replace(f"{data}/", "")
    if a_file is not None:
        line = line.replace(str(a_file), "FILE")
    return line.replace(str(ROOT), ".")


def assert_documented(command: str, code: int, line: str) -> None:
    rows = documented()
    fix = "rewrite it with `python scripts/bad_inputs.py`"
    assert command in rows, f"docs/bad-inputs.md has no row for `peftbench {command}`; {fix}"
    want_code, want = rows[command]
    line = as_documented(line)
    assert (code, _listless(line)) == (want_code, _listless(want)), \
        f"docs/bad-inputs.md shows another line for `peftbench {command}`; {fix}"


CASES = [
    (["method=nosuch"], "unknown method 'nosuch'"),
    (["model=nosuch"], "unknown model 'nosuch'"),
    (["task=nosuch"], "unknown task 'nosuch'"),
    (["method=lora", "method.r=0"], "method.r must be a positive integer"),
    (["method=dora", "method.r=-4"], "method.r must be a positive integer"),
    (["method=lora", "method.target_modules=[nosuch_proj]"], "match no layer"),
    (["method=lora", "method.target_modules=nosuch_preset"], "unknown target preset"),
    (["method=houlsby", "method.reduction_factor=1000"], "bottleneck size comes out as 0"),
    (["method=lora", "method.target_modules=query"], "available: attention.output.dense"),
    (["method=loha", "method.peft_kwargs.r=0"], "method.peft_kwargs.r must be a positive integer"),
    (["model.dtype=bf16", "precision=fp32"], "precision=fp32 but model minilm loads bf16 weights"),
    (["method=loha", "method.target_modules=[nosuch_proj]"], "target modules ['nosuch_proj'] match no layer"),
    (["device=meta"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["steps=0"], "steps must be a positive integer"),
    (["steps=-5"], "steps must be a positive integer"),
    (["task=procedural"], "task procedural is generative and needs a causal LM; model minilm is a classifier"),
    (["forgetting.data_files=/nonexistent/probe.txt"], "forgetting.data_files: file /nonexistent/probe.txt does not exist"),
    (["task.metrics=[{name:accuracy,direction:max},{name:macro_f1,direction:max}]"], "0 metrics are marked primary"),
    (["task.metrics=[{name:accuracy,primary:true},{name:bleu,primary:true}]"], "does not compute ['bleu']"),
    (["model=smollm2-135m", "task=procedural", "method=linear_probe"], "method linear_probe trains a fresh task head only"),
]


def _cli(forked_cli, args, tmp_path):
    return forked_cli.run(["run", *args, f"results_dir={tmp_path}"])


@pytest.mark.slow
@pytest.mark.parametrize("args,message", CASES)
def test_cli_one_line_and_exit_code(args, message, tmp_path, forked_cli):
    proc = _cli(forked_cli, args, tmp_path)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("peftbench: error:") and message in lines[0]
    assert not list(Path(tmp_path).glob("*.json")), "a bad config must not leave a result"
    assert_documented("run " + " ".join(args), 2, lines[0])


@pytest.mark.parametrize("args,message", CASES[3:])
def test_validation_rejects_before_loading(args, message, monkeypatch):
    import transformers

    def no_loading(*a, **k):
        pytest.fail("weights or a tokenizer were about to be loaded")

    for cls in (transformers.AutoModelForSequenceClassification, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", no_loading)
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare(compose(args))


def test_unmatched_targets_list_available_names():
    with pytest.raises(ConfigError) as err:
        prepare(compose(["method=lora", "method.target_modules=[nosuch_proj]"]))
    text = str(err.value)
    for name in ("attention.self.query", "attention.self.value", "intermediate.dense", "attn_qv", "all_linear"):
        assert name in text
    with pytest.raises(ConfigError) as err:  # a method built from a peft config says the same, not "peft_kwargs"
        prepare(compose(["method=loha", "method.target_modules=[nosuch_proj]"]))
    assert str(err.value).startswith("target modules ['nosuch_proj'] match no layer")


@pytest.mark.slow
def test_failed_run_inside_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "peftbench", "run", "-m", "model=tiny-llama", "method=lora", "method.r=0,2",
         "steps=2", "measure.latency=false", "task.n_train=32", "task.n_validation=8", "task.n_test=8",
         f"results_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    records = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    by_status = sorted((r["config"]["method"]["r"], r["status"]) for r in records)
    assert by_status == [(0, "failed"), (2, "ok")]
    failed = next(r for r in records if r["status"] == "failed")
    assert "method.r must be a positive integer" in failed["error"]


@pytest.mark.parametrize("error,code,line", [
    ("ConfigError: task.test_file (t.csv): label 'c' never appears", 2, "peftbench: error: task.test_file (t.csv): label 'c' never appears"),
    ("RuntimeError: boom", 1, "peftbench: run failed: RuntimeError: boom (traceback in"),
])
def test_a_failed_single_run_exits_non_zero(error, code, line, tmp_path, capsys):
    """Bad data found while reading it exits 2 like any bad input; a crash exits 1. Either way
    the failed record was written first."""
    from peftbench.experiments.app import exit_failed

    rec = {"run_id": "r", "error": error, "traceback": "Traceback ...", "config": {"results_dir": str(tmp_path)}}
    with pytest.raises(SystemExit) as e:
        exit_failed(rec)
    assert e.value.code == code and capsys.readouterr().err.startswith(line)


# Every key a user can set is checked for type and range before anything loads
# (experiments/config_check.py): one case per kind of rule and per config group.
TABLE_CASES = [
    (["batch_size=0"], "batch_size must be a positive integer, got 0"),
    (["max_length=abc"], "max_length must be a positive integer, got 'abc'"),
    (["lr=-1"], "lr must be null or a number > 0, got -1"),
    (["weight_decay=-0.1"], "weight_decay must be a number >= 0"),
    (["warmup_ratio=1.5"], "warmup_ratio must be a number in [0, 1)"),
    (["seed=-1"], "seed must be an integer >= 0"),
    (["precision=fp8"], "precision must be one of auto, fp32, bf16"),
    (["reuse_measurements=maybe"], "reuse_measurements must be true or false"),
    (["compile=1"], "compile must be true or false"),
    (["torch_threads=0"], "torch_threads must be auto or a positive integer"),
    (["force=maybe"], "force must be true or false"),
    (["measure.serving=5"], "measure.serving must be a group of keys"),
    (["measure.latency_repeats=0"], "measure.latency_repeats must be a positive integer"),
    (["measure.latency=yes"], "measure.latency must be true or false"),
    (["lm_eval.batch_size=0"], "lm_eval.batch_size must be a positive integer"),
    (["model.dtype=int8"], "model.dtype must be one of fp32, bf16, fp16"),
    (["method=lora", "method.alpha=0"], "method.alpha must be a number > 0"),
    (["method=lora", "method.dropout=1.0"], "method.dropout must be a number in [0, 1)"),
    (["method=houlsby", "method.bottleneck_size=0"], "method.bottleneck_size must be null or a positive integer"),
    (["method=qlora", "method.quant_type=int4"], "method.quant_type must be one of nf4, fp4"),
    (["method=loraplus", "method.loraplus_lr_ratio=0.5"], "method.loraplus_lr_ratio must be a number >= 1"),
    (["method=full_ft", "method.lr=0"], "method.lr must be null or a number > 0"),
    (["task.n_train=0"], "task.n_train must be a positive integer"),
    (["task.label_noise=2"], "task.label_noise must be a number in [0, 1)"),
    (["task=csv", "task.test_split_percentage=150"], "task.test_split_percentage must be a number in [0, 100)"),
    (["task=sst2", "task.max_eval_samples=-3"], "task.max_eval_samples must be null, auto or a positive integer"),
    (["model=tiny-llama", "task=gsm8k", "task.max_new_tokens=0"], "task.max_new_tokens must be a positive integer"),
    (["+lr_search=default", "lr_search.mode=best"], "lr_search.mode must be null or one of max, min"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode must be one of offline, online, disabled"),
]


@pytest.mark.parametrize("args,message", TABLE_CASES)
def test_every_key_is_checked_before_loading(args, message, monkeypatch):
    import transformers

    def no_loading(*a, **k):
        pytest.fail("weights or a tokenizer were about to be loaded")

    for cls in (transformers.AutoModelForSequenceClassification, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", no_loading)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        prepare(compose(args))
    # the CLI prints a ConfigError as this one line and exits 2 (the CLI cases above check that)
    assert_documented("run " + " ".join(args), 2, f"peftbench: error: {err.value}")


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("peftbench: error: ") and "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


# Hydra's own composition errors and unusable paths, through the CLI
CLI_CASES = [
    (["method=full_ft", "method.r=8"], "method.r: no such key (method full_ft accepts method.lr, method.name, method.report)"),
    (["-m", "method=lora,full_ft", "method.r=4"], "method full_ft accepts method.lr, method.name"),
    (["measure.nosuch=1"], "measure.nosuch: no such key; measure accepts adapter_size, latency"),
    (["+method.r=8"], "method.r: already exists; override it without the +"),
    (["hydra/launcher=nosuch"], "hydra/launcher: no option 'nosuch'; available: basic"),
    (["steps=["], "cannot parse the overrides"),
    (["model=hf"], "model.name has no value; set model.name=VALUE on the command line (model=hf: model.name=ORG/NAME"),
    # training by reward (experiments/grpo.py)
    (["objective=grpo"], "objective=grpo samples completions and rewards them: it needs a generation task on a causal LM"),
    (["model=tiny-llama", "task=procedural", "objective=grpo", "objective.num_generations=1"],
     "objective.num_generations must be a whole number >= 2"),
    (["model=tiny-llama", "task=procedural", "objective=grpo", "objective.temperature=0"], "objective.temperature must be above 0"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", CLI_CASES)
def test_hydra_errors_are_one_line(args, message, tmp_path, forked_cli):
    proc = _cli(forked_cli, args, tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert message in line
    assert_documented("run " + " ".join(args), 2, line)


@pytest.mark.slow
def test_unusable_results_folder_is_one_line(tmp_path, forked_cli):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    for where, message in ((a_file, "is a file, not a folder"), (a_file / "sub", "cannot be used")):
        for mode in ([], ["-m"]):
            proc = forked_cli.run(["run", *mode, f"results_dir={where}"])
            assert proc.returncode == 2, (mode, proc.stderr[-2000:])
            line = _one_error_line(proc)
            assert message in line
            if not mode:
                shown = as_documented(f"results_dir={where}", a_file=a_file)
                assert_documented(f"run {shown}", 2, as_documented(line, a_file=a_file))
    assert a_file.read_text() == "not a folder"


def _files(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine,pos\nawful,neg\ngreat,pos\npoor,neg\n")
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("text,label\n")
    (d / "latin1.csv").write_bytes("text,label\ncaf\u00e9,pos\nbad,neg\n".encode("latin-1"))
    (d / "unclosed.csv").write_text('text,label\n"unclosed,pos\nbad,neg\n')
    (d / "extra_field.csv").write_text("text,label\ngood, really,pos\nbad,neg\n")
    (d / "broken.jsonl").write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": \n')
    (d / "broken.json").write_text('[{"text": "a", "label": "pos"},')
    (d / "no_text.csv").write_text("review,label\nx,pos\ny,neg\n")
    (d / "no_label.csv").write_text("text,stars\nx,pos\ny,neg\n")
    (d / "unseen.csv").write_text("text,label\ngood,pos\nso-so,meh\n")
    return d


# what the data-file cases run with: a CSV task on a small LLM, cut short
DATA_BASE = ["task=csv", "model=tiny-llama", "steps=2", "measure.latency=false", "progress=false"]
DATA_CASES = [
    (["task.train_file=missing.csv"], "task.train_file: file {d}/missing.csv does not exist"),
    (["task.train_file=empty.csv"], "task.train_file: file {d}/empty.csv is empty"),
    (["task.train_file=header_only.csv"], "is empty (a header and no rows)"),
    (["task.train_file=latin1.csv"], "is not UTF-8 (byte 0xe9 at offset 14); re-save it as UTF-8"),
    (["task.train_file=unclosed.csv"], "is malformed CSV at line 3"),
    (["task.train_file=extra_field.csv"], "line 2 has 3 fields but its header has 2; check task.delimiter"),
    (["task=jsonl", "task.train_file=broken.jsonl"], "line 2 is not valid JSON (Expecting value); JSON Lines hold one JSON object per line"),
    (["task=jsonl", "task.train_file=broken.json"], "broken.json is not valid JSON"),
    (["task.train_file=no_text.csv"], "has no column 'text'; its columns: review, label"),
    (["task.train_file=no_label.csv"], "has no column 'label'; its columns: text, stars"),
    (["task.train_file=train.csv", "task.test_file=unseen.csv"], "label 'meh' (row 1) never appears in the training labels (neg, pos)"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", DATA_CASES, ids=[c[0][-1].split("=")[-1] for c in DATA_CASES])
def test_data_file_problems_are_one_line_with_the_fix(args, message, tmp_path, forked_cli):
    d = _files(tmp_path)
    args = [a.replace("_file=", f"_file={d}/") for a in args]
    proc = _cli(forked_cli, [*DATA_BASE, *args], tmp_path / "results")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = _one_error_line(proc)
    assert message.format(d=d) in line
    assert_documented("run " + " ".join(as_documented(a, data=d) for a in [*DATA_BASE, *args]), 2, as_documented(line, data=d))


@pytest.mark.slow
def test_version_and_a_report_of_a_path_that_does_not_exist(tmp_path):
    """`--version` names the package's version; `report` on a missing path is one error line and
    exit 2, and writes nothing (no empty report over the last one)."""
    from importlib import metadata

    out = subprocess.run([sys.executable, "-m", "peftbench", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"peftbench {metadata.version('peftbench')}"
    report = tmp_path / "report"
    out = subprocess.run([sys.executable, "-m", "peftbench", "report", str(tmp_path / "nonexistent"), "--out", str(report)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"peftbench: error: no such file or folder: {tmp_path / 'nonexistent'}; "
                                               "name a results folder or record files (e.g. peftbench report results/)"]
    assert not report.exists()


UNKNOWN_NAME_CASES = [
    (["method=LoRA"], "did you mean method=lora?"),  # case
    (["model=Qwen/Qwen2.5-0.5B"], "use model=hf model.name=Qwen/Qwen2.5-0.5B (any causal LM; add model.kind=classifier for an encoder), or model=qwen2.5-0.5b;"),  # a hub id: run it as is, or the shipped YAML
    (["method=lorra"], "did you mean method=lora"),  # a typo
    (["method=lora", "r=16"], "did you mean method.r (a key of method lora)?"),  # a group's key at the top
    (["stpes=3"], "did you mean steps?"),
    (["method=lora", "method.rr=8"], "method.rr: no such key; did you mean method.r? (method lora accepts"),  # a key inside a group
    (["method=lora", "method.xyz=1"], "method.xyz: no such key (method lora accepts"),  # nothing close: no guess
    (["measure.latncy=1"], "did you mean measure.latency?"),  # a key inside a top-level section
    (["task=SST2"], "did you mean task=sst2?"),
    (["reproduce", "practice_guide"], "did you mean practice_guides?"),  # a study
    (["reproduce", "Practice_Guides"], "did you mean practice_guides?"),
]


def unknown_name_command(args: list[str]) -> list[str]:
    return args if args[0] == "reproduce" else ["run", *args]


@pytest.mark.parametrize("args, hint", UNKNOWN_NAME_CASES)
@pytest.mark.slow
def test_an_unknown_name_says_what_was_meant(tmp_path, args, hint, forked_cli):
    command = unknown_name_command(args)
    out = forked_cli.run(command if command[0] == "reproduce" else [*command, f"results_dir={tmp_path}"])
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and lines[-1].startswith("peftbench: error: ") and hint in lines[-1], out.stderr[-1500:]
    assert "Traceback" not in out.stderr
    assert_documented(" ".join(command), 2, lines[-1])


def every_documented_command() -> list[str]:
    """The page's rows, in its order: what scripts/bad_inputs.py runs."""
    runs = [a for a, _ in CASES + CLI_CASES + TABLE_CASES] + [[*DATA_BASE, *a] for a, _ in DATA_CASES]
    return ([f"run {' '.join(a)}" for a in runs] + ["run results_dir=FILE", "run results_dir=FILE/sub"]
            + [" ".join(unknown_name_command(a)) for a, _ in UNKNOWN_NAME_CASES])


def test_the_bad_inputs_page_has_a_row_for_every_case_and_no_other():
    rows, cases = documented(), every_documented_command()
    assert not set(cases) - set(rows), f"no row on docs/bad-inputs.md for {sorted(set(cases) - set(rows))}"
    assert not set(rows) - set(cases), f"docs/bad-inputs.md rows no test checks: {sorted(set(rows) - set(cases))}"
