"""One help style: every subcommand's --help exits 0 and starts with `usage: peftbench COMMAND`."""
from __future__ import annotations

import pytest

from peftbench.cli import main


@pytest.mark.parametrize("command", ["run", "report", "bench", "sweep-size", "reproduce", "compare"])
def test_every_subcommand_has_help_naming_peftbench(command, capsys):
    try:
        code = main([command, "--help"])
    except SystemExit as e:  # argparse's own --help
        code = e.code
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"usage: peftbench {command}"), out[:200]
    assert "powered by Hydra" not in out and "python -m" not in out


def test_run_help_lists_the_groups_and_the_config_folder_option(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "method=NAME" in out and "lora" in out and "--config-dir DIR" in out and len(out.splitlines()) < 40
