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
    # one layout: usage, what it does, the arguments under `options:`; argparse's own lines nowhere
    assert "[-h]" not in out and "show this help message" not in out and "positional arguments" not in out
    assert "\noptions:\n" in out, out


@pytest.mark.parametrize("argv, words", [
    (["compare"], "the following arguments are required: RESULTS, --reference; see peftbench compare --help"),
    (["report", "--figure-width", "big"], "invalid choice: 'big'"),
    (["report", "--bogus"], "unrecognized arguments: --bogus; see peftbench report --help"),
])
def test_bad_arguments_to_an_analysis_command_are_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("peftbench: error: ") and words in err and len(err.strip().splitlines()) == 1, err


def test_run_help_lists_the_groups_and_the_config_folder_option(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "method=NAME" in out and "lora" in out and "--config-dir DIR" in out and len(out.splitlines()) < 40


def test_report_reads_claims_and_studies_from_the_users_config_folder(tmp_path, capsys):
    """`report --config-dir DIR` takes DIR/claims and DIR/study, the same folder `run` and
    `reproduce` take; a folder that is not there is one error line before anything is written."""
    assert main(["report", str(tmp_path), "--config-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftbench: error: --config-dir") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    mine = tmp_path / "mine"
    (mine / "study").mkdir(parents=True)
    (mine / "claims").mkdir()
    (mine / "study" / "my_study.yaml").write_text("name: my_study\nclaims: [my_claim]\n")
    (mine / "claims" / "my_claim.yaml").write_text(
        "id: my_claim\nstatement: s\nsource: t\ncheck: metric_in_range\nmethod: lora\nmetric: primary\nrange: [0, 1]\ntolerance: 0\n")
    (tmp_path / "records").mkdir()
    assert main(["report", str(tmp_path / "records"), "--config-dir", str(mine), "--study", "my_study",
                 "--out", str(tmp_path / "r")]) == 0
    claims = (tmp_path / "r" / "claims.md").read_text()
    assert "my_claim" in claims and "guide_lora" not in claims


def test_bench_names_its_machine_and_refuses_an_unknown_bench_in_one_line(capsys):
    from peftbench.experiments.bench import machine_line
    from peftbench.experiments.machine import cpu_name

    assert machine_line().startswith(cpu_name()) and "usable cores" in machine_line() and "bf16" in machine_line()
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("peftbench: error: unknown bench 'nope'; name one of compile, harness, trainer, measure, launchers "
                           "(see peftbench bench --help)")
