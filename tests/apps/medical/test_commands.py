"""`verticals fed ...` as an operator runs it: certificates a TLS client accepts, node keys in the
format Flower's node authentication reads, site folders from a corpus, and clear errors."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from apps.cli import main
from apps.medical.sites import load_site, write_site

from .conftest import ncbi

VERTICALS = str(Path(sys.executable).parent / "verticals")


def test_certificates_make_a_chain_a_tls_client_trusts(tmp_path):
    assert main(["fed", "certs", str(tmp_path), "--host", "localhost", "--host", "127.0.0.1"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "ca.key", "server.pem", "server.key"}
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0  # private keys: owner only
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(incoming, outgoing, server_hostname="localhost")
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):  # a handshake in memory: it fails if the chain or the name is wrong
        for side in (client_side, server_side):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(outgoing.read())
        incoming.write(server_out.read())
    assert client_side.getpeercert()["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))


def test_node_keys_are_ec_p384_in_openssh_format(tmp_path):
    assert main(["fed", "keys", str(tmp_path), "north", "south"]) == 0
    private = load_ssh_private_key((tmp_path / "north").read_bytes(), password=None)
    public = load_ssh_public_key((tmp_path / "north.pub").read_bytes())
    assert (
        private.curve.name == "secp384r1" and public.public_numbers() == private.public_key().public_numbers()
    )
    assert (tmp_path / "north").stat().st_mode & 0o077 == 0


def test_split_writes_site_folders_a_supernode_reads(tmp_path, capsys):
    corpus = write_site(tmp_path / "corpus", {"train": ncbi("train", 60)}) / "train.tsv"
    assert (
        main(["fed", "split", str(corpus), str(tmp_path / "sites"), "--sites", "a", "b", "--mode", "skewed"])
        == 0
    )
    sites = [load_site({"data": str(tmp_path / "sites" / name)}) for name in ("a", "b")]
    assert sum(len(s.train) + len(s.evaluation) for s in sites) == 60
    assert "a: {'sentences'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fed", "superlink", "--port", "9"], "give --certs (TLS), or --insecure"),
        (
            ["fed", "supernode", "--site", "x", "--data", "/nonexistent/x", "--ca", "/nonexistent/ca.crt"],
            "/nonexistent/ca.crt does not exist",
        ),
        (["fed", "run"], "give --ca (TLS), or --insecure"),
        (
            ["fed", "supernode", "--site", "x", "--data", "x", "--insecure", "--threads", "0"],
            "--threads must be",
        ),
    ],
)
def test_missing_security_or_files_are_named(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_a_supernode_without_records_stops_before_it_connects(tmp_path):
    (tmp_path / "ca.crt").write_text("unused")
    command = [
        VERTICALS,
        "fed",
        "supernode",
        "--site",
        "x",
        "--data",
        str(tmp_path),
        "--ca",
        str(tmp_path / "ca.crt"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"no training records in {tmp_path}" in result.stderr
