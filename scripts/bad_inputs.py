"""Print the README's table of bad inputs: every case of tests/test_bad_input.py with the line it
gets and the exit status: through the CLI, except the config-table cases (see in_process).

    python scripts/bad_inputs.py > /tmp/bad_inputs.md
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import test_bad_input as t  # noqa: E402


def run(args: list[str], results: Path) -> tuple[int, str]:
    if not any(a.startswith("results_dir=") for a in args):
        args = [*args, f"results_dir={results}"]
    env = {**t.os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "peftbench", "run", *args], cwd=ROOT, env=env,
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


def main() -> None:
    from concurrent.futures import ThreadPoolExecutor

    tmp = Path(tempfile.mkdtemp())
    data = t._files(tmp)
    a_file = tmp / "taken"
    a_file.write_text("x")
    rows: list[tuple[list[str], str | None, bool]] = [(a, None, False) for a, _ in t.CASES[:3] + t.CLI_CASES]
    rows += [(a, None, True) for a, _ in t.CASES[3:] + t.TABLE_CASES]
    rows += [([f"results_dir={a_file}"], "results_dir=FILE", False), ([f"results_dir={a_file}/sub"], "results_dir=FILE/sub", False)]
    base = ["task=csv", "model=tiny-llama", "steps=2", "measure.latency=false", "progress=false"]
    rows += [(base + [x.replace("_file=", f"_file={data}/") for x in a], " ".join(a), False) for a, _ in t.DATA_CASES]
    with ThreadPoolExecutor(3) as pool:  # CLI cases in parallel; Hydra's compose is not thread-safe
        futures = {i: pool.submit(run, r[0], tmp / "results" / str(i)) for i, r in enumerate(rows) if not r[2]}
        local = {i: in_process(r[0]) for i, r in enumerate(rows) if r[2]}
        done = [local[i] if i in local else futures[i].result() for i in range(len(rows))]
    print("| input | exit | what it prints |\n|---|---|---|")
    for (args, shown, _), (code, line) in zip(rows, done):
        line = line.replace(str(data) + "/", "").replace(str(a_file), "FILE").replace(str(ROOT), ".").replace("|", "\\|")
        print(f"| `{shown or ' '.join(args)}` | {code} | `{line}` |", flush=True)


if __name__ == "__main__":
    main()
