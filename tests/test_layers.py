"""The house: one import package, data flowing one way (methods -> experiments -> analysis -> the
command line), and no circle between modules, counting the imports inside functions too."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the folder each part of the package lives in, and its floor: an import may only run down or level
LAYERS = {"peftbench.methods": ("methods", 1), "peftbench.experiments": ("experiments", 2),
          "peftbench.analysis": ("analysis", 3), "peftbench": ("peftbench", 4)}
PLUGIN = ("hydra_plugins.peftbench_sweeper", "hydra_plugins/peftbench_sweeper")  # Hydra's namespace, a shim
BARE = {"methods", "experiments", "analysis"}


def _modules() -> dict[str, Path]:
    """Every module of the package by its installed name."""
    found = {}
    for package, (folder, _) in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    found[PLUGIN[0]] = ROOT / PLUGIN[1] / "__init__.py"
    return found


def _imports(path: Path, name: str) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            out.append((node.lineno, module, [a.name for a in node.names]))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, module, names in _imports(path, name):
            if module not in modules:
                continue
            # `from pkg import sub` names the submodule; `from pkg import thing` the package
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in modules} or {module}
            graph[name] |= {t for t in targets if t != name}
    return graph


def _floor(module: str) -> int:
    if module == PLUGIN[0]:
        return 2
    return max((floor for pkg, (_, floor) in LAYERS.items() if module == pkg or module.startswith(pkg + ".")
                and pkg != "peftbench"), default=LAYERS["peftbench"][1])


def test_no_import_runs_back_up():
    up = [f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _floor(b) > _floor(a)]
    assert not up, "imports that run back up a floor:\n" + "\n".join(sorted(up))


def test_no_circle_between_modules():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, "modules that import each other, directly or around a circle:\n" + "\n".join(map(", ".join, circles))


@pytest.mark.slow
def test_nothing_imports_the_layers_by_their_bare_folder_names():
    """`import experiments` would load a second copy of every module beside peftbench.experiments."""
    files = [p for d in ("peftbench", "methods", "experiments", "analysis", "hydra_plugins", "scripts", "tests", "conf")
             for p in (ROOT / d).rglob("*.py")]
    bare = [f"{p.relative_to(ROOT)}:{line}: {module}" for p in files for line, module, _ in _imports(p, "x.y")
            if module.split(".")[0] in BARE]
    # code in strings too: a `python -c` snippet or a monkeypatch target
    said = re.compile(r"(?:^|[\s;\"'(])from (?:methods|experiments|analysis)[\w.]* import |(?:^\s*|[;\"'(]\s*)import (?:methods|experiments|analysis)\b")
    bare += [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
             if said.search(line) and not line.lstrip().startswith("#")]
    assert not bare, "\n".join(bare)


def test_every_package_folder_is_installed():
    """pyproject lists the packages by hand (the layers' folders map beneath peftbench): a new
    subfolder with an __init__.py that is not listed would be missing from a wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {f"{pkg}.{'.'.join(p.parent.relative_to(ROOT / folder).parts)}".rstrip(".")
               for pkg, (folder, _) in LAYERS.items() for p in (ROOT / folder).rglob("__init__.py")}
    conf = {"peftbench." + ".".join(p.relative_to(ROOT).parts) for p in [ROOT / "conf", *(ROOT / "conf").rglob("*")] if p.is_dir()}
    assert folders | {PLUGIN[0]} | conf == listed
    assert {config["package-dir"][k] for k in config["package-dir"]} == {"methods", "experiments", "analysis", "conf"}


@pytest.mark.slow
def test_a_wheel_adds_one_import_package(tmp_path):
    """`pip install .` puts `peftbench` (with its configs) in site-packages, and beside it only the
    sweeper's portion of Hydra's shared `hydra_plugins` namespace."""
    had_build = (ROOT / "build").exists()
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                              str(ROOT)], capture_output=True, text=True, timeout=300)
    finally:  # setuptools builds in the source tree
        if not had_build:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"peftbench", "hydra_plugins"}
    assert {n for n in names if n.startswith("hydra_plugins/")} == {"hydra_plugins/peftbench_sweeper/__init__.py"}
    assert "peftbench/conf/config.yaml" in names and "peftbench/conf/method/lora.yaml" in names
    assert "peftbench/experiments/run.py" in names and "peftbench/cli.py" in names and "peftbench/analysis/report.js" in names
