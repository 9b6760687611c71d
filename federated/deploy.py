"""Flower's deployment engine on real machines: a test certificate authority, SuperNode keys, the
`flwr` CLI's connection file, and the command lines of the SuperLink and the SuperNodes.

    make_certificates("certs", hosts=["localhost", "127.0.0.1"])    # ca.crt, server.pem, server.key
    make_node_key("keys", "north")                                  # keys/north, keys/north.pub
    superlink_command(port=9093, certificates="certs", database="runs/superlink.db", authenticate=True)
    supernode_command(superlink="localhost:9093", port=9101, ca="certs/ca.crt",
                      key="keys/north", node_config={"site": "north", "data": "/data/north"})
    write_connection(flwr_home, "hospitals", "localhost:9093", ca="certs/ca.crt")  # for `flwr run`

Runtime dependency installation stays off (it needs the network): every node runs the suite's
own installed packages. The SuperLink serves the Fleet API (SuperNodes), the Control API (the
`flwr` CLI) and the ServerApp runtime on one port. Certificates made here are for tests and
pilots; a hospital uses its own PKI's.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode and flwr live beside python
CA_FILE, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"


def make_certificates(
    directory: str | Path, *, hosts: Sequence[str] = ("localhost", "127.0.0.1"), days: int = 30
) -> Path:
    """A new CA (ca.crt, ca.key) and a server certificate it signs for `hosts` (server.pem,
    server.key) in `directory`. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "verticals"),
            x509.NameAttribute(NameOID.COMMON_NAME, "verticals test CA"),
        ]
    )
    until = now + datetime.timedelta(days=days)
    signs_certificates = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(signs_certificates, critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])).issuer_name(ca_name)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _write(directory / CA_FILE, ca.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca.key", _pem(ca_key), private=True)
    _write(directory / SERVER_CERT, server.public_bytes(serialization.Encoding.PEM))
    _write(directory / SERVER_KEY, _pem(server_key), private=True)
    return directory


def make_node_key(directory: str | Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's key pair (EC P-384, OpenSSH format, as Flower's node authentication wants):
    `directory/name` (private, mode 600) and `directory/name.pub` (to register at the SuperLink)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / name
    public = directory / f"{name}.pub"
    _write(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        private=True,
    )
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(public, line + f" {name}\n".encode())
    return private, public


def superlink_command(
    *,
    port: int,
    certificates: str | Path | None,
    database: str | Path,
    authenticate: bool = True,
    host: str = "127.0.0.1",
) -> list[str]:
    """`flower-superlink` with TLS from `certificates` (None: plaintext, for a closed test network
    only), SuperNode authentication, a state database, and no runtime installs."""
    command = [
        str(BIN / "flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(database),
    ]
    command.append("--disable-runtime-dependency-installation")
    if certificates is None:
        return [*command, "--insecure"]
    certificates = Path(certificates)
    command += [
        "--ssl-ca-certfile",
        str(certificates / CA_FILE),
        "--ssl-certfile",
        str(certificates / SERVER_CERT),
    ]
    command += ["--ssl-keyfile", str(certificates / SERVER_KEY)]
    return [*command, "--enable-supernode-auth"] if authenticate else command


def supernode_command(
    *,
    superlink: str,
    port: int,
    ca: str | Path | None,
    key: str | Path | None,
    node_config: Mapping[str, str | int | float],
    max_retries: int | None = None,
) -> list[str]:
    """`flower-supernode` joining `superlink` (host:port), its own runtime `port`, TLS trusting
    `ca` (None: plaintext), signing in with the private `key`, and its `node_config` (the site's
    name and data folder; it stays on the site)."""
    rendered = " ".join(f"{k}={_config_value(v)}" for k, v in node_config.items())
    command = [
        str(BIN / "flower-supernode"),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        rendered,
    ]
    command += ["--insecure"] if ca is None else ["--root-certificates", str(ca)]
    if key is not None:
        command += ["--auth-supernode-private-key", str(key)]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    return command


def write_connection(flwr_home: str | Path, name: str, address: str, *, ca: str | Path | None) -> Path:
    """The `flwr` CLI's connection `name` to a SuperLink in `flwr_home`/config.toml (made the default)."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    security = "insecure = true" if ca is None else f'root-certificates = "{Path(ca).resolve()}"'
    text = f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n{security}\n'
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _config_value(value: str | int | float) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def environment(flwr_home: str | Path | None = None, *, threads: int | None = None) -> dict[str, str]:
    """This process's environment with the suite's scripts first on PATH (the SuperLink and the
    SuperNodes start `flower-superexec` by name), FLWR_HOME set when given, and OMP_NUM_THREADS
    when `threads` is (a SuperNode's ClientApps inherit it: torch trains on that many threads)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


SITES_FILE = "sites.json"  # in the coordinator's flwr home: node id -> the name it was registered under


def remember_site(flwr_home: str | Path, node_id: str | int, name: str) -> None:
    """Note the name a SuperNode was registered under (Flower's `supernode ls` lists ids only)."""
    names = site_names(flwr_home)
    names[str(node_id)] = name
    path = Path(flwr_home) / SITES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(names, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def site_names(flwr_home: str | Path) -> dict[str, str]:
    """Node id -> site name, for the SuperNodes registered from this flwr home."""
    path = Path(flwr_home) / SITES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def flwr_command(*args: str) -> list[str]:
    """The `flwr` CLI of this environment with `args`."""
    return [str(BIN / "flwr"), *args]
