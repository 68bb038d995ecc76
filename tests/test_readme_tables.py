"""The README's result tables are generated from committed records, never typed."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "readme_tables.py"


def _blocks(text: str) -> list[str]:
    return re.findall(r"<!-- tables: ([^ ]+) -->", text)


def test_readme_tables_match_their_records():
    readme = (ROOT / "README.md").read_text()
    sources = _blocks(readme)
    if not sources:
        pytest.skip("README.md has no generated table block")
    for src in sources:
        assert list((ROOT / src).glob("*.json")), f"{src} holds no records"
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_hand_edited_number_is_caught(tmp_path):
    readme = (ROOT / "README.md").read_text()
    if not _blocks(readme):
        pytest.skip("README.md has no generated table block")
    start = readme.index("<!-- tables: ")
    body_start = readme.index("\n| ", start)
    m = re.compile(r"\d").search(readme, body_start + 3)  # a digit inside the first table row
    edited = readme[:m.start()] + str((int(m.group()) + 1) % 10) + readme[m.end():]
    copy = tmp_path / "README.md"
    copy.write_text(edited)
    out = subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(copy)], capture_output=True, text=True)
    assert out.returncode == 1 and "differs from its records" in out.stderr


def test_reference_records_stay_out_of_a_results_folder_report(tmp_path):
    """results/reference/ sits inside the default results folder: a user's `peftbench report`
    must not pool the committed records with their own runs, but reads them when named."""
    import shutil

    from analysis.load import find_json_files

    ref = ROOT / "results" / "reference" / "demo"
    if not list(ref.glob("*.json")):
        pytest.skip("no committed reference records")
    shutil.copytree(ref, tmp_path / "results" / "reference" / "demo")
    (tmp_path / "results" / "mine.json").write_text("{}")
    files, _ = find_json_files([tmp_path / "results"])
    assert [f.name for f in files] == ["mine.json"]
    files, _ = find_json_files([tmp_path / "results" / "reference" / "demo"])
    assert len(files) == len(list(ref.glob("*.json")))
