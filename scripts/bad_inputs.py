"""Print the README's table of bad inputs: every case of tests/test_bad_input.py run through the
CLI, with the line it printed and its exit status.

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
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, (lines[-1] if lines else "")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    data = t._files(tmp)
    a_file = tmp / "taken"
    a_file.write_text("x")
    rows = [(a, None) for a, _ in t.CASES + t.TABLE_CASES + t.CLI_CASES]
    rows += [([f"results_dir={a_file}"], "results_dir=FILE"), ([f"results_dir={a_file}/sub"], "results_dir=FILE/sub")]
    base = ["task=csv", "model=tiny-llama", "steps=2", "measure.latency=false", "progress=false"]
    rows += [(base + [x.replace("_file=", f"_file={data}/") for x in a], " ".join(a)) for a, _ in t.DATA_CASES]
    print("| input | exit | what it prints |\n|---|---|---|")
    for args, shown in rows:
        code, line = run(args, tmp / "results")
        line = line.replace(str(data) + "/", "").replace(str(a_file), "FILE")
        print(f"| `{shown or ' '.join(args)}` | {code} | `{line}` |", flush=True)


if __name__ == "__main__":
    main()
