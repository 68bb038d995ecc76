"""The README's result tables are generated from committed records, never typed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "readme_tables.py"


def _blocks(text: str) -> list[str]:
    return re.findall(r"<!-- (?:tables|headline|verdicts|claims|grid|timing|zoo|ladder): ([^ ]+?)(?: [a-z0-9_]+)? -->", text)


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.slow
def test_readme_and_docs_tables_match_their_records():
    sources = [src for page in PAGES for src in _blocks(page.read_text())]
    assert len(sources) >= 20, "the README and the docs pages hold the generated blocks"
    for src in sources:
        assert (ROOT / src).is_dir(), f"{src} is no records folder"
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_a_hand_edited_number_is_caught(tmp_path):
    page = (ROOT / "docs" / "default-benchmark.md").read_text()
    start = page.index("<!-- tables: ")
    body_start = page.index("\n| ", start)
    m = re.compile(r"\d").search(page, body_start + 3)  # a digit inside the first table row
    edited = page[:m.start()] + str((int(m.group()) + 1) % 10) + page[m.end():]
    copy = tmp_path / "default-benchmark.md"
    copy.write_text(edited)
    out = subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(copy)], capture_output=True, text=True)
    assert out.returncode == 1 and "differs from its records" in out.stderr


def test_reference_records_stay_out_of_a_results_folder_report(tmp_path):
    """results/reference/ sits inside the default results folder: a user's `peftbench report`
    must not pool the committed records with their own runs, but reads them when named."""
    import shutil

    from peftbench.analysis.load import find_json_files

    ref = ROOT / "results" / "reference" / "demo"
    if not list(ref.glob("*.json")):
        pytest.skip("no committed reference records")
    shutil.copytree(ref, tmp_path / "results" / "reference" / "demo")
    (tmp_path / "results" / "mine.json").write_text("{}")
    files, _ = find_json_files([tmp_path / "results"])
    assert [f.name for f in files] == ["mine.json"]
    files, _ = find_json_files([tmp_path / "results" / "reference" / "demo"])
    assert len(files) == len(list(ref.glob("*.json")))


def _readme_tables():
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_tables

    return readme_tables


def test_claims_block_gives_each_claim_of_the_study_its_verdict_and_stated_reason(tmp_path):
    import shutil

    records = list((ROOT / "results" / "reference" / "demo").glob("*.json"))
    if not records:
        pytest.skip("no committed reference records")
    folder = tmp_path / "demo_explained"  # a records folder named after the study whose claims it checks
    folder.mkdir()
    for f in records:
        shutil.copy(f, folder)
    text = _readme_tables().render(f"<!-- claims: {folder} -->\nstale\n<!-- /claims -->\n")
    rows = {line.split("**")[1]: line for line in text.splitlines() if line.startswith("| **")}
    assert set(rows) == {"demo_lora_qv_reaches_guide", "guide_lora_95_100_of_full_ft"}
    # one seed of the demo: LoRA r=8 on q,v lands well below 95% of full FT, but one seed gives
    # no interval, so the verdict cannot tell, and says why
    row = rows["demo_lora_qv_reaches_guide"]
    assert "| **cannot tell** |" in row and "primary ratio" in row and "one observation" in row
    assert "point estimate outside" in row
    assert "| **not applicable** |" in rows["guide_lora_95_100_of_full_ft"]
    assert "peftbench reproduce" in rows["guide_lora_95_100_of_full_ft"]
    assert "stale" not in text


def test_a_study_variant_folder_takes_its_study_claims():
    rt = _readme_tables()
    guides = rt.study_claim_ids("results/reference/studies/practice_guides")
    assert "guide_lora_95_100_of_full_ft" in guides
    assert rt.study_claim_ids("results/reference/studies/practice_guides_sst2") == guides
    with pytest.raises(SystemExit):
        rt.study_claim_ids("results/reference/studies/no_such_study")


@pytest.mark.slow
def test_grid_block_puts_each_configuration_on_its_lr_grid_with_validations_pick_in_bold(tmp_path):
    import shutil

    import yaml

    records = list((ROOT / "results" / "reference" / "demo").glob("*.json"))
    if not records:
        pytest.skip("no committed reference records")
    folder = tmp_path / "demo_explained"
    folder.mkdir()
    for f in records:
        shutil.copy(f, folder)
    rt = _readme_tables()
    text = rt.render(f"<!-- grid: {folder} -->\n<!-- /grid -->\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == len(records)  # one configuration per demo run
    assert all(line.count("**") == 2 for line in rows)  # one lr each, which validation picks
    full_ft = next(line for line in rows if line.startswith("| full_ft "))
    acc = next(json.loads(f.read_text()) for f in records if "__full_ft__" in f.name)["metrics"]["test"]["accuracy"]
    assert f"**{100 * acc:.1f} (n=1)**" in full_ft  # the demo's full FT, one seed: no CI, n marked
    # the estimate each reproduce invocation printed sits in the timing block
    (folder / "study.yaml").write_text(yaml.safe_dump({"study": "demo_explained", "invocations": [
        {"finished_at": "2026-01-01T00:00:00+0000", "overrides": [], "estimate_s": 600.0, "estimate_bases": ["measured"],
         "sweep_s": 540.0, "records_after": len(records)},
        {"finished_at": "2026-01-02T00:00:00+0000", "overrides": [], "estimate_s": 600.0, "estimate_bases": ["measured"],
         "runs_left": 2, "estimate_left_s": 120.0, "sweep_s": 90.0, "records_after": len(records)}]}))
    timing = rt.render(f"<!-- timing: {folder} -->\n<!-- /timing -->\n")
    assert f"| 2026-01-01 00:00 UTC | 10 (measured) | 9.0 | {len(records)} |" in timing
    # a resume: the estimate for the runs it had left sits beside the whole study's
    assert f"| 2026-01-02 00:00 UTC | 10 (measured); for the 2 left: 2 | 1.5 | {len(records)} |" in timing


@pytest.mark.slow
def test_forgetting_grid_block_shows_each_configurations_forgetting_not_its_score():
    import json

    folder = ROOT / "results" / "reference" / "studies" / "learns_less_forgets_less_llm"
    records = [json.loads(f.read_text()) for f in folder.glob("*.json")]
    if not records:
        pytest.skip("no committed reference records")
    rt = _readme_tables()
    text = rt.render(f"<!-- grid: {folder} forgetting -->\n<!-- /grid -->\n")
    assert "forgetting (ce_increase_nats" in text
    full_ft = next(line for line in text.splitlines() if line.startswith("| full_ft "))
    runs = [r for r in records if r["method"] == "full_ft" and float(r["config"]["lr"]) == 1e-5]
    mean = sum(r["forgetting"]["ce_increase_nats"] for r in runs) / len(runs)
    assert full_ft.split(" | ")[5].strip("* ").startswith(f"{mean:.3f} ± ")  # the lr 1e-05 cell
    score = rt.render(f"<!-- grid: {folder} -->\n<!-- /grid -->\n")
    assert "exact_match on the test split" in score and "ce_increase_nats" not in score


@pytest.mark.slow
def test_the_memory_estimate_table_in_the_docs_is_the_scripts():
    """docs/sweeps.md's 8B per-GPU estimate is what scripts/estimate_table.py draws from
    conf/report/memory_estimate.yaml (models built on the meta device: no weights, seconds)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("estimate_table", ROOT / "scripts" / "estimate_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    page = (ROOT / "docs" / "sweeps.md").read_text()
    block = re.search(r"<!-- estimate-table -->\n(.*?)<!-- /estimate-table -->", page, re.S)
    assert block, "docs/sweeps.md lost its estimate-table markers"
    table = mod.table()
    assert block.group(1) == table, "regenerate with: python scripts/estimate_table.py --write"
    assert table.count("\n") == 2 + len(mod.MODELS) * len(mod.METHODS)
