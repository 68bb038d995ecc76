"""The docs site builds strictly, and the README stays one page whose links all land."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_docs_site_builds_strictly(tmp_path):
    """A broken link, a page missing from the nav or a missing page fails the build."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs, "mkdocs is in the test extras (pip install -e '.[test]')"
    out = subprocess.run([mkdocs, "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "studies" / "index.html").exists()


@pytest.mark.slow
def test_a_broken_link_fails_the_build(tmp_path):
    site = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", site / "docs")
    shutil.copy(ROOT / "mkdocs.yml", site / "mkdocs.yml")
    (site / "docs" / "running.md").write_text((site / "docs" / "running.md").read_text() + "\n[gone](no-such-page.md)\n")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    out = subprocess.run([mkdocs, "build", "--strict", "-f", str(site / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "no-such-page.md" in out.stdout + out.stderr


def test_the_readme_is_one_page_and_its_links_land():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    # a newcomer's first screen: the two commands, the links into the docs, the headline results
    head = "\n".join(readme.splitlines()[:50])
    assert "make demo" in head and "make test" in head and "docs/index.md" in head
    assert "<!-- /headline -->" in head, "the headline table ends on the first screen"
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links and all((ROOT / link).exists() for link in links), [l for l in links if not (ROOT / l).exists()]
    assert "../" not in readme  # no path outside the repository
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(p.relative_to(ROOT / "docs").as_posix() in nav for p in (ROOT / "docs").rglob("*.md")), "every docs page is in the nav"


def test_no_docs_page_names_a_path_outside_the_repository():
    outside = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        links = [l for l in re.findall(r"\]\(([^)#\s]+)\)", text) if "://" not in l]
        outside += [f"{page.name}: {l}" for l in links if not (page.parent / l).resolve().is_relative_to(ROOT)]
        outside += [f"{page.name}: ../shared" for _ in range(text.count("../shared"))]
    assert not outside, outside


@pytest.mark.parametrize("page", ["docs/default-benchmark.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "studies").glob("*.md"))])
def test_generated_pages_hold_their_blocks(page):
    text = (ROOT / page).read_text()
    assert "<!-- /claims -->" in text or "<!-- /tables -->" in text


def test_every_study_with_reference_records_has_its_page_and_a_link_to_it():
    """One docs page per study (docs/studies/NAME.md), listed on the studies page and linked from
    the README's verdicts."""
    from peftbench.analysis.studies import study_of_folder

    folders = [p.name for p in (ROOT / "results" / "reference" / "studies").iterdir() if p.is_dir() and list(p.glob("*.json"))]
    named = {study_of_folder(n).stem for n in folders if study_of_folder(n) is not None}
    assert len(named) >= 7 and "rl_peft" in named
    index = (ROOT / "docs" / "studies.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in named:
        assert (ROOT / "docs" / "studies" / f"{name}.md").exists(), name
        assert f"(studies/{name}.md)" in index, name
        assert f"(docs/studies/{name}.md)" in readme, name
