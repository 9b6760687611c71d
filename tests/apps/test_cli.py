"""The `verticals` command.

.venv/bin/python -m pytest tests/apps/test_cli.py -q
"""

from apps.cli import main
from core_model import load_model, save_model


def test_info_describes_the_embedded_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "embedded" in out and "18.1 M total" in out and "16 routed (top 4" in out


def test_info_reads_a_checkpoint_directory(tmp_path, capsys):
    save_model(load_model("tiny"), tmp_path)
    assert main(["info", "--model", str(tmp_path)]) == 0
    assert f"checkpoint at {tmp_path}" in capsys.readouterr().out


def test_info_on_a_real_shape_does_not_pretend_to_have_weights(capsys):
    assert main(["info", "--model", "deepseek-v3"]) == 0
    out = capsys.readouterr().out
    assert "671.0 B total" in out and "shape only" in out


def test_info_on_a_missing_model_is_a_clear_error(capsys):
    assert main(["info", "--model", "no/such/dir"]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err
