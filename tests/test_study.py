"""Studies (conf/study/*.yaml): validation, `peftbench reproduce --list` with its estimates, a bad
name, and a tiny study end to end (sweep, resume, report of its runs alone, verdicts)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftbench import reproduce as rep
from peftbench import reproduce_cli
from peftbench.experiments import estimate as es
from peftbench.experiments import study as st

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}


def cli(forked_cli, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`peftbench ARGS` in a process of its own, forked from the session's warm driver
    (tests/forked_cli.py): each start would otherwise import torch, transformers and peft again."""
    return forked_cli.run(list(args), env=ENV, timeout=timeout)


def test_shipped_studies_are_valid_and_name_existing_claims():
    names = st.study_names()
    assert len(names) >= 6
    for name in names:
        study = st.load_study(name)  # raises on an unknown claim id or key
        assert study.claims and st.study_jobs(study)
        assert "seed" in study.grid and len(str(study.grid["seed"]).split(",")) >= 3  # CIs need seeds


@pytest.mark.parametrize("change, message", [
    ({"nosuch": 1}, "unknown key(s) nosuch"),
    ({"claims": ["no_such_claim"]}, "claim(s) no_such_claim not found"),
    ({"arms": [{"lr": "1e-3"}]}, "arms[0] names no method"),
    ({"arms": [{"method": "lora", "method.r": [4, 8]}]}, "comma list in a string"),
    ({"name": "other"}, "differs from the file name"),
])
def test_bad_study_names_the_key(tmp_path, change, message):
    data = {"name": "s", "title": "t", "source": "x", "claims": ["dora_ge_lora"], "arms": [{"method": "lora"}], **change}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(st.StudyError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        st.load_study("s", tmp_path)


@pytest.mark.slow
def test_unknown_study_is_one_error_line_listing_the_studies(forked_cli):
    out = cli(forked_cli, "reproduce", "nosuch")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peftbench: error: unknown study 'nosuch'; available: ")
    assert "lora_without_regret" in lines[0] and "Traceback" not in out.stderr


@pytest.mark.slow
def test_list_shows_runs_and_measured_estimates(capsys, monkeypatch):
    from peftbench.experiments.estimate import convergence_jobs

    monkeypatch.setenv("PEFTBENCH_BF16_PROBE", "fast")  # the reference records are bf16: a machine where auto is bf16
    assert reproduce_cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in st.study_names():
        study = st.load_study(name)
        line = next(x for x in out.splitlines() if x.startswith(f"{name}: "))
        n_check = len(convergence_jobs(st.study_jobs(study), 2)) if study.convergence else 0  # one a line and seed
        check = f" + {n_check} for the convergence check" if study.convergence else ""
        assert f"{name}: {len(st.study_jobs(study))} runs{check}, est. " in line and (" min" in line or " h " in line)
    # minilm full FT and LoRA have records under results/reference/demo: measured, not guessed
    lwr = next(x for x in out.splitlines() if x.startswith("lora_without_regret: "))
    assert "(measured step costs)" in lwr
    assert "sst2_headline: 18 runs + 6 for the convergence check" in out  # 2 lines x 3 grid seeds


def test_estimate_scales_with_steps_and_says_its_basis():
    basis = es.Basis("minilm", "lora", "attn_qv", "bf16", step_s_per_token=1e-4, eval_s_per_example=0.01, other_s=2.0, file="x")
    job = es.job_settings(["method=lora", "steps=100", "batch_size=16", "max_length=32", "task.n_validation=100",
                           "task.n_test=100", "measure.metrics_before=false", "measure.latency=false", "precision=bf16"])
    one = es.estimate_job(job, [basis])
    assert one.basis == "measured"
    assert one.seconds == pytest.approx(100 * 512 * 1e-4 + 200 * 0.01 + 2.0)
    two = es.estimate_job({**job, "steps": 200}, [basis])
    assert two.seconds - one.seconds == pytest.approx(100 * 512 * 1e-4)
    # another method of the same model: scaled by training FLOPs, and said so
    full = es.estimate_job({**job, "method": "full_ft", "trains_all": True}, [basis])
    assert full.basis == "measured, other method" and full.seconds > one.seconds
    assert es.estimate_job({**job, "model": "nosuch"}, [basis]).basis in ("analytic", "unknown")


def test_estimate_counts_reused_costs_once_and_says_when_its_records_are_another_precision(monkeypatch):
    basis = es.Basis("minilm", "lora", "attn_qv", "bf16", 1e-4, 0.01, other_s=30.0, file="x", reusable_s=20.0)
    fp32 = es.job_settings(["method=lora", "precision=fp32", "measure.metrics_before=false"])
    est = es.estimate_job(fp32, [basis])
    assert est.basis.startswith("measured, at bf16 not fp32") and est.reusable_s == 20.0
    study = st.Study(name="t", title="t", source="t", about="t", claims=[], settings={"precision": "bf16"},
                     grid={"seed": "0,1,2"}, arms=[{"method": "lora", "lr": "1e-3,2e-3"}])
    assert es.cost_configuration(["seed=0", "lr=1e-3", "method=lora"]) == es.cost_configuration(["method=lora", "seed=2", "lr=2e-3"])
    one = es.estimate_job(es.job_settings(st.study_jobs(study)[0]), [basis]).seconds
    monkeypatch.setattr(es, "reference_bases", lambda folders: [basis])
    got = es.estimate_study(study)
    # six runs of one cost configuration: the first measures latency and serving, five copy them
    assert got["runs"] == 6
    assert got["seconds"] == pytest.approx(6 * one - 5 * 20.0 + es.SWEEP_OVERHEAD_S)


def test_estimate_says_when_no_record_measured_serving_costs():
    """Serving costs follow measure.latency and take minutes a run on an LLM; an estimate whose
    records of that model never measured them says so instead of passing for measured."""
    old = es.Basis("smollm2-135m", "lora", "all_linear", "bf16", 1e-3, 0.1, other_s=42.0, file="x", measures=(True, False, False))
    job = es.job_settings(["model=smollm2-135m", "method=lora", "method.target_modules=all_linear", "steps=40",
                           "measure.metrics_before=false", "precision=bf16"])
    assert job["serving"] and not es.job_settings(["measure.latency=false"])["serving"]
    assert not es.job_settings(["measure.serving.enabled=false"])["serving"]
    assert es.estimate_job(job, [old]).basis == "measured, serving costs not in it"
    served = es.Basis(**{**old.__dict__, "other_s": 320.0, "measures": (True, False, True)})
    both = es.estimate_job(job, [old, served])
    assert both.basis == "measured" and both.seconds > es.estimate_job(job, [old]).seconds + 250
    assert es._measures({"latency": True, "metrics_before": False}) == (True, False, False)  # a record from before the meter
    # a record of the model that measured serving, with other switches: its time counts, no label
    other_switches = es.Basis(**{**served.__dict__, "measures": (True, True, True)})
    mixed = es.estimate_job(job, [old, other_switches])
    assert mixed.basis == "measured" and mixed.seconds == pytest.approx(es.estimate_job(job, [served]).seconds)
    assert not es.job_settings(["measure.latency_keep_base=false"])["serving"]  # the meter needs the base copy
    assert es.job_settings(["measure.latency=false", "measure.serving.enabled=true"])["serving"]


def test_estimate_counts_the_examples_of_local_data_files(tmp_path):
    """A GLUE-style task has no n_validation: validation is carved from the train file and the
    validation file is the test split. The estimate and the per-example cost of its records must
    count those examples, not a default, or every estimate that reads them is off by the ratio."""
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("sentence\tlabel\n" + "a\t1\n" * 2000)
    dev.write_text("sentence\tlabel\n" + "b\t0\n" * 300)
    task = {"data_files": {"train": str(train), "validation": str(dev)}, "validation_split_percentage": 5}
    assert es.eval_examples(task) == 100 + 300
    assert es.eval_examples({**task, "max_eval_samples": 50}) == 50 + 50
    assert es.eval_examples({"n_validation": 400, "n_test": 1000}) == 1400
    assert es.eval_examples({"max_eval_samples": "auto"}) == 64  # generation tasks on CPU: 32 a split
    assert es.eval_examples({"data_files": {"train": str(tmp_path / "absent.tsv"), "validation": str(dev)}}) == 2000
    job = es.job_settings(["task=sst2", f"task.data_files.train={train}", f"task.data_files.validation={dev}"])
    assert job["n_eval"] == 400


TINY = {
    "name": "tiny", "title": "Tiny", "source": "test", "claims": ["tiny_range"],
    "settings": {"model": "minilm", "task": "synth", "steps": 2, "batch_size": 4, "max_length": 16, "task.n_train": 32,
                 "task.n_validation": 16, "task.n_test": 16, "measure.latency": False, "measure.adapter_size": False,
                 "measure.metrics_before": False, "forgetting.enabled": False, "progress": False, "eval_batch_size": 16},
    "grid": {"seed": "0,1"},
    "arms": [{"method": "lora", "lr": "1e-3"}],
}
# a claim on a cost: 2-step runs learn nothing, and a claim on scores would leave them out
TINY_CLAIM = {"id": "tiny_range", "statement": "LoRA's model weighs under a gigabyte.", "source": "test",
              "check": "metric_in_range", "method": "lora", "metric": "cost.weight_bytes", "range": [0.0, 1e9], "tolerance": 0.0}


def test_variant_replaces_or_drops_a_grid_axis():
    """A task that sizes its training set by another key sweeps that key instead: the variant's
    `null` drops the study's grid axis and its own value becomes the axis."""
    study = st.parse_study({**TINY, "grid": {"seed": "0,1", "task.n_train": "32,64"},
                            "variants": {"files": {"task": "sst2", "task.n_train": None, "task.max_train_samples": "32,64"}}},
                           "tiny")
    assert sorted(x for j in st.study_jobs(study) for x in j if x.startswith("task.n_train=")) == \
        ["task.n_train=32", "task.n_train=32", "task.n_train=64", "task.n_train=64"]
    jobs = st.study_jobs(study, variant="files")
    assert len(jobs) == 4 and not any(x.startswith("task.n_train=") for j in jobs for x in j)
    assert sorted({x for j in jobs for x in j if x.startswith("task.max_train_samples=")}) == \
        ["task.max_train_samples=32", "task.max_train_samples=64"]


def test_variant_arms_replace_the_studys_in_jobs_and_preset(tmp_path):
    """A model with another step budget needs other arms: the variant's own arms make its sweep
    (jobs and the preset the sweeper reads) and leave the study's untouched; a variant arm with
    no method is one error naming where it is."""
    data = {**TINY, "arms": [{"method": "lora", "lr": "1e-3"}],
            "variants": {"llm": {"model": "smollm2-135m", "arms": [{"method": "full_ft", "lr": "1e-5,3e-5"}]}}}
    data["variants"]["files"] = {"task": "sst2"}
    study = st.parse_study(data, "tiny")
    assert data["variants"]["llm"]["arms"] == [{"method": "full_ft", "lr": "1e-5,3e-5"}]  # the parsed file is not changed
    assert sorted(x for j in st.study_jobs(study) for x in j if x.startswith("method=")) == ["method=lora"] * 2
    files = st.study_jobs(study, variant="files")  # a variant without arms keeps the study's
    assert len(files) == 2 and all("method=lora" in j and "task=sst2" in j for j in files)
    jobs = st.study_jobs(study, variant="llm")
    assert len(jobs) == 4 and all("method=full_ft" in j and "model=smollm2-135m" in j for j in jobs)
    preset = yaml.safe_load(st.preset_text(study, "llm"))["hydra"]["sweeper"]
    assert preset["arms"] == [{"method": "full_ft", "lr": "1e-5,3e-5"}] and "arms" not in preset["params"]
    bad = {**data, "variants": {"llm": {"arms": [{"lr": "1e-3"}]}}}
    with pytest.raises(st.StudyError, match=r"variants\.llm\.arms\[0\] names no method"):
        st.parse_study(bad, "tiny")


@pytest.mark.slow
def test_reproduce_tiny_study_end_to_end(tmp_path, forked_cli):
    """A user's own config folder (--config-dir, as for `peftbench run`) holds the study, its claim
    and the method the study runs, which the package does not ship."""
    mine = tmp_path / "mine"
    for sub in ("study", "claims", "method"):
        (mine / sub).mkdir(parents=True)
    lora = yaml.safe_load((ROOT / "conf" / "method" / "lora.yaml").read_text())
    (mine / "method" / "my_lora.yaml").write_text(yaml.safe_dump({**lora, "name": "my_lora", "impl": "lora"}))
    (mine / "study" / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "arms": [{"method": "my_lora", "lr": "1e-3"}]}))
    (mine / "claims" / "tiny_range.yaml").write_text(yaml.safe_dump({**TINY_CLAIM, "method": "my_lora"}))
    # an unrelated ok record in the same results folder must stay out of the study's report
    results = tmp_path / "results"
    results.mkdir()
    demo = next((ROOT / "results" / "reference" / "demo").glob("*full_ft*.json"))
    (results / demo.name).write_text(demo.read_text())
    args = ["reproduce", "tiny", "--config-dir", str(mine), "--out", str(tmp_path / "report"), f"results_dir={results}"]
    out = cli(forked_cli, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[sweep] 2 runs, 0 already done, 2 to launch" in out.stdout
    assert "report of its 2 result files" in out.stdout
    assert "tiny_range: " in out.stdout and "why: " in out.stdout  # the verdict and its reason
    assert "n=2 seeds" in out.stdout and "95% CI" in out.stdout
    runs = (tmp_path / "report" / "runs.csv").read_text()
    rows = runs.strip().splitlines()[1:]
    assert len(rows) == 2 and all(",my_lora," in r for r in rows)  # the study's 2 runs, not the other record
    assert (tmp_path / "report" / "index.html").exists()
    assert len([p for p in results.glob("*.json") if "lora" in p.name]) == 2
    # resume: nothing left to run, same verdict; --keep copies exactly the study's records and
    # writes the report beside them (a stale record of an older sweep goes)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "old__run.json").write_text("{}")
    again = cli(forked_cli, *[a for a in args if a not in ("--out", str(tmp_path / "report"))], "--keep", str(kept))
    assert again.returncode == 0 and "2 already done, 0 to launch" in again.stdout and "tiny_range: " in again.stdout
    assert "est. " in out.stdout and "2 to run, est." in out.stdout  # the first start: both runs are left
    assert "0 to run, est. 0 min" in again.stdout  # the resume knows nothing is left before it starts
    assert sorted(p.name for p in kept.glob("*.json")) == sorted(p.name for p in results.glob("*lora*.json"))
    assert (kept / "report" / "index.html").exists() and "report of its 2 result files" in again.stdout
    note = yaml.safe_load((kept / "study.yaml").read_text())
    assert note["study"] == "tiny" and note["records"] == 2
    assert [i["records_after"] for i in note["invocations"]] == [2] and note["invocations"][0]["estimate_s"] > 0
    assert note["invocations"][0]["runs_left"] == 0


@pytest.mark.slow
def test_reproduce_help_names_every_option(forked_cli):
    out = cli(forked_cli, "reproduce", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: peftbench reproduce")
    for option in ("--variant", "--out", "--keep", "--config-dir", "--until-decided", "--budget", "--looks", "--list"):
        assert f"  {option}" in out.stdout, option


@pytest.mark.slow
def test_a_deciding_study_extends_edge_picks_writes_its_plan_then_adds_seeds_at_the_picks(tmp_path, forked_cli):
    """decide: {seeds: 3, extend: 1}: the grid (2 seeds x 2 lrs), one round extending a pick on
    the grid's edge, the analysis plan written before the seeds phase, then seed 2 at each pick;
    with --until-decided, the plan carries the sequential design and the first look, where the
    claim decides, is the last."""
    import json

    data = {**TINY, "arms": [{"method": "lora", "lr": "1e-3,3e-3"}], "decide": {"seeds": 3, "extend": 1}}
    (tmp_path / "studies").mkdir()
    (tmp_path / "claims").mkdir()
    (tmp_path / "studies" / "tiny.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "claims" / "tiny_range.yaml").write_text(yaml.safe_dump(TINY_CLAIM))
    results = tmp_path / "results"
    out = cli(forked_cli, "reproduce", "tiny", "--studies", str(tmp_path / "studies"), "--claims", str(tmp_path / "claims"),
              "--keep", str(tmp_path / "kept"), "--until-decided", "--budget", "1h", "--looks", "2", f"results_dir={results}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "look 1 of 2 (3 seeds per pick, level 0.025): 0 claim(s) cannot tell" in out.stdout
    assert "stopped adding seeds: every claim decided" in out.stdout and "Verdicts are read at level 0.025" in out.stdout
    looks = yaml.safe_load((tmp_path / "kept" / "sequential_looks.yaml").read_text())
    assert [lk["look"] for lk in looks["looks"]] == [1] and looks["alpha_per_look"] == 0.025
    assert "picked on the edge of their lr grid: extending (round 1 of 1)" in out.stdout  # 2 lrs: every pick is an edge
    assert "analysis plan written before the seeds phase" in out.stdout
    plan = yaml.safe_load((tmp_path / "kept" / "analysis_plan.yaml").read_text())
    [line] = plan["picks"]
    assert len(plan["study_sha256"]) == 64 and plan["claims"] == ["tiny_range"] and len(line["grid"]) == 3
    assert plan["sequential"]["seeds_per_look"] == [3, 6] and plan["sequential"]["budget_s"] == 3600
    pick = line["pick_lr"]
    recs = [json.loads(p.read_text()) for p in results.glob("*.json")]
    at_pick = sorted(r["seed"] for r in recs if abs(r["lr"] - pick) < 1e-12)
    assert at_pick == [0, 1, 2] and len(recs) == 3 * 2 + 1  # three lrs at seeds 0-1, seed 2 at the pick
    plan_time = (tmp_path / "kept" / "analysis_plan.yaml").stat().st_mtime
    seed2 = next(r for r in recs if r["seed"] == 2)
    from datetime import datetime

    assert datetime.fromisoformat(seed2["started_at"]).timestamp() >= plan_time - 1  # the plan came first
    assert "report of its 7 result files" in out.stdout and len(list((tmp_path / "kept").glob("*.json"))) == 7
    bad = {**data, "decide": {"seeds": 1}}
    with pytest.raises(st.StudyError, match="decide must be a mapping with seeds"):
        st.parse_study(bad, "tiny")


@pytest.mark.slow
def test_every_study_arm_composes_and_passes_the_config_check():
    """Each distinct job shape of every study and variant composes in Hydra and passes
    experiments.config_check, so a study never fails at its first run for a key typo."""
    from conftest import compose
    from peftbench.experiments import config_check

    for name in st.study_names():
        study = st.load_study(name)
        for variant in [None, *study.variants]:
            shapes = {}
            for job in st.study_jobs(study, variant=variant):
                shapes.setdefault(tuple(sorted(x.split("=")[0] for x in job)) + tuple(x for x in job if x.startswith("method=")), job)
            for job in shapes.values():
                config_check.check(compose(job))


@pytest.mark.slow
def test_jobs_to_launch_follows_the_sweepers_rules(tmp_path):
    """Which jobs a (resumed) sweep launches, by composing them as the sweeper does: an ok record
    is skipped, a duplicate run id is launched once, `force` launches everything."""
    import json

    from conftest import compose
    from peftbench.experiments import record

    study = st.parse_study({**TINY, "arms": [{"method": "lora", "lr": "1e-3"}, {"method": "lora", "lr": "1e-3,0.001"}]}, "tiny")
    root, preset = rep.write_preset(study, tmp_path / "conf", None)
    ov = [f"results_dir={tmp_path / 'results'}"]
    jobs = st.study_jobs(study, ov)
    assert len(jobs) == 6  # 2 seeds x (1 + 2) lr spellings of one lr
    assert es.jobs_to_launch(jobs, root, preset) == [True, True] + [False] * 4  # each run id once
    first = jobs[0]
    rid = record.run_id(compose(list(first)))
    demo = next((ROOT / "results" / "reference" / "demo").glob("*.json"))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{rid}.json").write_text(demo.read_text())  # a schema-valid ok record
    assert json.loads(demo.read_text())["status"] == "ok"
    assert es.jobs_to_launch(jobs, root, preset) == [False, True] + [False] * 4
    forced = st.study_jobs(study, [*ov, "force=true"])
    assert es.jobs_to_launch(forced, root, preset)[:2] == [True, True]
    est = es.estimate_study(study, ov)
    left = es.estimate_left(est, es.jobs_to_launch(jobs, root, preset))
    assert left["runs_left"] == 1 and 0 < left["seconds_left"] < est["seconds"]


@pytest.mark.slow
def test_the_installed_command_reproduces_from_any_folder(tmp_path):
    """`peftbench reproduce` as installed (the console script, run outside the checkout) finds the
    study sweeper, although it composes configs (its estimate) before Hydra's launch: Hydra scans
    its plugins once, at the first composition, and the editable install's import hook hides the
    checkout's hydra_plugins from that scan unless peftbench puts the root on sys.path first."""
    script = Path(sys.executable).with_name("peftbench")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    out = subprocess.run([str(script), "reproduce", "demo_explained", f"results_dir={tmp_path}", "hydra.sweeper.dry_run=true"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Unknown plugin class" not in out.stderr and "nothing ran (hydra.sweeper.dry_run=true)" in out.stdout


def test_list_loads_neither_torch_nor_the_report_where_the_machine_is_known(tmp_path):
    """`reproduce --list` reads what precision=auto resolves to here from the answer a run left
    (experiments.machine), so it starts in about a second instead of importing torch and the
    report's libraries."""
    import json
    import os
    import subprocess
    import sys

    from peftbench.experiments.cores import usable_cores
    from peftbench.experiments.machine import AUTO_FILE, auto_key, may_have_cuda

    if may_have_cuda():
        pytest.skip("with an NVIDIA driver loaded, device=auto may be CUDA: only torch can tell")
    (tmp_path / AUTO_FILE).write_text(json.dumps({auto_key("cpu", "fp32", usable_cores()): "fp32"}))
    env = {k: v for k, v in os.environ.items() if k != "PEFTBENCH_BF16_PROBE"} | {"PEFTBENCH_CACHE": str(tmp_path)}
    code = ("import sys; from peftbench.reproduce_cli import main; rc = main(['--list']); "
            "print('LOADED', rc, sorted(m for m in ('torch', 'pandas', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "LOADED 0 []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]
    assert "lora_without_regret:" in out.stdout


@pytest.mark.slow
def test_a_study_checks_its_budget_at_each_pick_apart_from_its_evidence(tmp_path, forked_cli):
    """convergence: {steps_factor: 2}: after the grid, each line's pick runs again at its seeds at
    twice the steps; those records sit in kept/convergence/ beside their criterion, the claims
    never read them, and the report pairs each with its run at the study's budget."""
    import json

    data = {**TINY, "arms": [{"method": "lora", "lr": "1e-3,3e-3"}], "convergence": {"steps_factor": 2, "tolerance": 0.05}}
    (tmp_path / "studies").mkdir()
    (tmp_path / "claims").mkdir()
    (tmp_path / "studies" / "tiny.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "claims" / "tiny_range.yaml").write_text(yaml.safe_dump(TINY_CLAIM))
    results, kept = tmp_path / "results", tmp_path / "kept"
    listed = cli(forked_cli, "reproduce", "--list", "--studies", str(tmp_path / "studies"), "--claims", str(tmp_path / "claims"))
    assert listed.returncode == 0 and "4 runs + 2 for the convergence check" in listed.stdout, listed.stdout
    out = cli(forked_cli, "reproduce", "tiny", "--studies", str(tmp_path / "studies"), "--claims", str(tmp_path / "claims"),
              "--keep", str(kept), f"results_dir={results}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "convergence check: 1 pick(s) again at 2x their steps (2 runs, into " in out.stdout
    # the longer runs write beside their criterion, so a report of the whole results folder leaves them out
    assert (results / "convergence" / "tiny" / "criterion.yaml").exists()
    assert len(list((results / "convergence" / "tiny").glob("*.json"))) == 2
    whole = cli(forked_cli, "report", str(results), "--out", str(tmp_path / "r1"))
    assert whole.returncode == 0 and "4 runs" in whole.stdout, whole.stdout
    longer = [json.loads(p.read_text()) for p in (kept / "convergence").glob("*.json")]
    main = [json.loads(p.read_text()) for p in kept.glob("*.json")]
    assert len(main) == 4 and len(longer) == 2 and {r["config"]["steps"] for r in longer} == {4}
    assert {r["seed"] for r in longer} == {0, 1} and len({r["lr"] for r in longer}) == 1
    criterion = yaml.safe_load((kept / "convergence" / "criterion.yaml").read_text())
    assert criterion["tolerance"] == 0.05 and criterion["study_file"].endswith("tiny.yaml")
    conv = (kept / "report" / "convergence.md").read_text()
    assert "| 2 |" in conv and "| 4 |" in conv and "seeds 0, 1" in conv  # 2 steps against 4, both seeds paired
    assert "Convergence of the runs these verdicts read:" in (kept / "report" / "claims.md").read_text()
    assert "[study] convergence: " in out.stdout
    # a report of the kept folder finds the check by itself, and its tables hold the 4 runs alone
    again = cli(forked_cli, "report", str(kept), "--out", str(tmp_path / "r2"))
    assert again.returncode == 0 and "4 runs" in again.stdout
    assert (tmp_path / "r2" / "convergence.md").read_text() == conv
    bad = {**data, "convergence": {"steps_factor": 1, "tolerance": 0.01}}
    with pytest.raises(st.StudyError, match="steps_factor must be a whole number >= 2"):
        st.parse_study(bad, "tiny")
    with pytest.raises(st.StudyError, match="tolerance must be a number"):
        st.parse_study({**data, "convergence": {"steps_factor": 2}}, "tiny")
