"""Lazy dependencies and the one `edge-ladder` command."""
import subprocess
import sys

import pytest

from edge_ladder import _deps, cli


def test_require_names_package_reason_and_install_commands():
    with pytest.raises(_deps.MissingDependencyError) as info:
        _deps.require("tensorrt_that_does_not_exist")
    assert "pip install tensorrt_that_does_not_exist" in str(info.value)
    message = _deps.missing_message("pycuda")
    assert "pycuda" in message and "Jetson" in message and "pip install pycuda" in message


def test_importing_the_package_does_not_import_torch():
    code = "import sys, edge_ladder, edge_ladder.features, edge_ladder.frontend, edge_ladder.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_lists_every_stage_and_each_subcommand_module_defines_its_interface():
    help_text = subprocess.run([sys.executable, "-m", "edge_ladder", "--help"], capture_output=True,
                               text=True).stdout
    for name in cli.SUBCOMMANDS:
        assert name in help_text
    import importlib
    for name, (module_name, _) in cli.SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name


def test_cli_reports_user_errors_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edge_ladder", "evaluate", str(tmp_path / "missing.pt"),
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip(), "an error message is expected"


def test_ctrl_c_claims_saved_work_only_where_a_rerun_continues(monkeypatch, capsys):
    """The generic message said "completed work was saved (re-run to resume where supported)" for
    every command; `train` now says what it saved itself (tests/test_train.py)."""
    from edge_ladder import prepare, synthetic

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(synthetic, "run", interrupted)
    monkeypatch.setattr(prepare, "run", interrupted)
    assert cli.main(["make-features", "OUT"]) == 130
    error = capsys.readouterr().err
    assert error == "edge-ladder make-features: interrupted\n"
    assert cli.main(["prepare", "CREMA", "--out", "F"]) == 130
    assert "re-run the same command to continue" in capsys.readouterr().err
