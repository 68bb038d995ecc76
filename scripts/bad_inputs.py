"""Write the table of docs/bad-inputs.md: every case of tests/test_bad_input.py with the line it
gets and its exit status, through the CLI (the config-table cases in process: see in_process).
Each of those tests checks its own row, so the page cannot drift from what the CLI prints.

    python scripts/bad_inputs.py           # rewrite the block <!-- bad-inputs --> ... <!-- /bad-inputs -->
    python scripts/bad_inputs.py --print   # print the table instead
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import test_bad_input as t  # noqa: E402

def run(command: list[str], results: Path) -> tuple[int, str]:
    if command[0] == "run" and not any(a.startswith("results_dir=") for a in command):
        command = [*command, f"results_dir={results}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "peftbench", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, (lines[-1] if lines else "")


def in_process(args: list[str]) -> tuple[int, str]:
    """Config-table cases: the CLI prints `peftbench: error: ` + this ConfigError and exits 2
    (tests/test_bad_input.py checks that wrapper through the CLI on its own cases)."""
    from peftbench.experiments.run import prepare
    from peftbench.methods.base import ConfigError
    from tests.conftest import compose

    try:
        prepare(compose(args))
    except ConfigError as e:
        return 2, f"peftbench: error: {e}"
    return 0, ""


def cases(tmp: Path) -> list[tuple[list[str], bool]]:
    """(the command to run, whether in process), in the order of t.every_documented_command()."""
    data = t._files(tmp)
    a_file = tmp / "taken"
    a_file.write_text("x")
    # the config-table cases in process, for speed: the tests run CASES through the CLI too, which
    # prints the same ConfigError as this one line
    rows = [(["run", *a], i >= 3) for i, (a, _) in enumerate(t.CASES)]
    rows += [(["run", *a], False) for a, _ in t.CLI_CASES]
    rows += [(["run", *a], True) for a, _ in t.TABLE_CASES]
    rows += [(["run", *t.DATA_BASE, *(x.replace("_file=", f"_file={data}/") for x in a)], False) for a, _ in t.DATA_CASES]
    rows += [(["run", f"results_dir={a_file}"], False), (["run", f"results_dir={a_file}/sub"], False)]
    rows += [(t.unknown_name_command(a), False) for a, _ in t.UNKNOWN_NAME_CASES]
    return rows


def table() -> str:
    tmp = Path(tempfile.mkdtemp())
    rows = cases(tmp)
    shown = t.every_documented_command()
    assert len(rows) == len(shown)
    with ThreadPoolExecutor(3) as pool:  # CLI cases in parallel; Hydra's compose is not thread-safe
        futures = {i: pool.submit(run, r[0], tmp / "results" / str(i)) for i, r in enumerate(rows) if not r[1]}
        local = {i: in_process(r[0][1:]) for i, r in enumerate(rows) if r[1]}
        done = [local[i] if i in local else futures[i].result() for i in range(len(rows))]
    out = ["| command | exit | what it prints |", "|---|---|---|"]
    for command, (code, line) in zip(shown, done):
        line = t.as_documented(line, data=tmp / "data", a_file=tmp / "taken").replace("|", "\\|")
        out.append(f"| `peftbench {command}` | {code} | `{line}` |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table instead of rewriting the page")
    args = parser.parse_args()
    os.chdir(ROOT)  # messages name paths from the working folder, which the page shows as `.`
    text = table()
    if args.print:
        print(text, end="")
        return
    page = t.BAD_INPUTS_PAGE.read_text(encoding="utf-8")
    head, rest = page.split("<!-- bad-inputs -->\n", 1)
    _, tail = rest.split("<!-- /bad-inputs -->", 1)
    t.BAD_INPUTS_PAGE.write_text(f"{head}<!-- bad-inputs -->\n{text}<!-- /bad-inputs -->{tail}", encoding="utf-8")
    print(f"wrote {t.BAD_INPUTS_PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
