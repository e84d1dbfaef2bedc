"""The README's option table is the one generated from the parser and the defaults."""

from pathlib import Path

from detnorm.cli.train import build_parser
from detnorm.config import DEFAULTS
from detnorm.config.options_doc import main, options_table, update

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_is_current():
    assert update(README, check=True), (
        "README.md's option table is out of date: run .venv/bin/python -m detnorm.config.options_doc "
        "README.md"
    )


def test_table_lists_every_flag_and_every_config_key():
    table = options_table()
    own = {"--config", "--set", "--print-config", "-h", "--help"}  # the command's, not options
    for action in build_parser()._actions:
        for flag in action.option_strings:
            if flag not in own and flag == action.option_strings[0]:
                assert f"| `{flag}" in table, flag
    for key in DEFAULTS:
        assert f"| `{key}` |" in table, key


def test_check_mode_reports_a_stale_table(tmp_path, capsys):
    stale = tmp_path / "README.md"
    stale.write_text("# x\n<!-- train-options:start -->\n| old |\n<!-- train-options:end -->\n")
    assert main(["--check", str(stale)]) == 1 and "out of date" in capsys.readouterr().out
    assert main([str(stale)]) == 0 and main(["--check", str(stale)]) == 0
    assert options_table() in stale.read_text()
    (tmp_path / "bad.md").write_text("no markers")
    assert main(["--check", str(tmp_path / "bad.md")]) == 2
