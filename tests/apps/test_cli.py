"""The `verticals` command.

.venv/bin/python -m pytest tests/apps/test_cli.py -q
"""

import socket
import subprocess
import sys
import time

import httpx
import pytest

from apps.cli import main
from core_model import load_model, save_model
from core_model.checkpoint import serving_dtype
from core_model.engine.replicas import EngineSpec, replicas_for


def test_info_describes_the_embedded_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "embedded" in out and "14.4 M total" in out and "16 routed (top 4" in out


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


def test_serve_refuses_a_public_host_without_a_key(monkeypatch, capsys):
    monkeypatch.delenv("VERTICALS_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without an API key" in capsys.readouterr().err


def test_serve_stops_on_a_bad_adapter_naming_it(checkpoint, tmp_path, capsys):
    assert main(["serve", "--model", str(checkpoint), "--adapter", f"broken={tmp_path}"]) == 2
    assert (
        f"verticals: error: adapter 'broken': no adapter_config.json in {tmp_path}" in capsys.readouterr().err
    )


def test_serve_wants_adapters_as_name_equals_dir(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--adapter", "just-a-name"])
    assert raised.value.code == 2 and "expected NAME=DIR, got 'just-a-name'" in capsys.readouterr().err


def test_serve_wants_engine_replicas_as_auto_or_a_count(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--engine-replicas", "0"])
    assert raised.value.code == 2 and "expected 'auto' or a count >= 1, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("bias", ["-1", "nan", "strong"])
def test_serve_wants_the_draft_copy_bias_as_inf_or_a_number(capsys, bias):
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--cs-draft-copy-bias", bias])
    assert (
        raised.value.code == 2 and f"expected 'inf' or a number >= 0, got '{bias}'" in capsys.readouterr().err
    )


@pytest.mark.parametrize("options", [[], ["--no-access-log"], ["--engine-replicas", "2"]])
def test_serve_prints_its_url_and_answers_there(checkpoint, tmp_path, options):
    with socket.socket() as probe:  # a free port; a tiny race with other processes is acceptable here
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "apps.cli",
        "serve",
        "--model",
        str(checkpoint),
        "--port",
        str(port),
        *options,
    ]
    log = tmp_path / "server.log"
    with log.open("w") as errors:
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        line = server.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/v1" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == str(checkpoint)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not come up"
                time.sleep(0.1)
        helpers = subprocess.run(
            ["pgrep", "-P", str(server.pid), "-f", "engine.replicas"], capture_output=True
        )
        auto = replicas_for(EngineSpec(model=str(checkpoint), dtype=serving_dtype(str(checkpoint), "cpu")))
        assert len(helpers.stdout.split()) == (1 if "--engine-replicas" in options else auto - 1)
    finally:
        server.terminate()
        server.wait(timeout=10)
    logged = server.stdout.read() + log.read_text()
    assert ('"GET /v1/models HTTP/1.1" 200' in logged) == ("--no-access-log" not in options)
