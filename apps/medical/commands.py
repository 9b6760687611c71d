"""`verticals fed ...` (the federation's deployment) and `verticals medical ...` (the site page).

    verticals fed certs runs/fed/certs --host localhost --host 127.0.0.1    # a test CA + server cert
    verticals fed keys runs/fed/keys north south east                      # one key pair per site
    verticals fed superlink --certs runs/fed/certs --port 9093             # the coordinator
    verticals fed register runs/fed/keys/north.pub --name north --ca runs/fed/certs/ca.crt
    verticals fed supernode --site north --data /srv/north --key runs/fed/keys/north \\
        --ca runs/fed/certs/ca.crt --superlink localhost:9093 --port 9101  # at each hospital
    verticals fed sites --ca runs/fed/certs/ca.crt                         # who is connected
    verticals fed run --ca runs/fed/certs/ca.crt --rounds 10               # start a run, follow it
    verticals fed split train.tsv runs/fed/data --sites north south east --mode skewed
    verticals medical ui --api http://127.0.0.1:8000                       # the site's page

`superlink` and `supernode` replace this process with Flower's own (same PID, same signals), so
a service manager or a test stops them by PID. Arguments are parsed here; the work is in
federated.deploy, apps.medical.sites and Flower's CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from apps.pages import page_process
from federated import deploy

APP_DIR = Path(__file__).resolve().parent / "flower_app"
UI_SCRIPT = Path(__file__).resolve().parent / "ui.py"
CONNECTION = "verticals"
DEFAULT_SUPERLINK = "localhost:9093"
DEFAULT_HOME = Path("runs/fed")


def add_commands(commands: argparse._SubParsersAction) -> None:
    fed = commands.add_parser(
        "fed", help="federated training: certificates, keys, SuperLink, SuperNodes, runs"
    )
    kinds = fed.add_subparsers(dest="fed_command", required=True)
    certs = kinds.add_parser(
        "certs", help="make a test certificate authority and the SuperLink's certificate"
    )
    certs.add_argument("out", type=Path, help="folder to write ca.crt, server.pem, server.key into")
    certs.add_argument(
        "--host", action="append", help="a name or IP the SuperLink is reached at (repeatable)"
    )
    keys = kinds.add_parser("keys", help="make a SuperNode key pair per site (EC P-384, OpenSSH)")
    keys.add_argument("out", type=Path)
    keys.add_argument("names", nargs="+", help="site names")
    link = kinds.add_parser("superlink", help="run the SuperLink (TLS, SuperNode authentication, a database)")
    link.add_argument("--certs", type=Path, help="folder of `fed certs` (omit only with --insecure)")
    link.add_argument(
        "--port", type=int, default=9093, help="Fleet, Control and runtime API port (default 9093)"
    )
    link.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    link.add_argument("--database", type=Path, default=DEFAULT_HOME / "superlink.db", help="SuperLink state")
    link.add_argument(
        "--insecure", action="store_true", help="plaintext, no authentication: a closed test network only"
    )
    register = kinds.add_parser("register", help="allow a site's public key to join (run at the coordinator)")
    register.add_argument("public_key", type=Path)
    register.add_argument("--name", required=True, help="the site's name, shown by `verticals fed sites`")
    _connection_options(register)
    listing = kinds.add_parser("sites", help="list the SuperNodes the SuperLink knows, online or not")
    _connection_options(listing)
    node = kinds.add_parser("supernode", help="run a site's SuperNode next to its records")
    node.add_argument("--site", required=True, help="the site's name (reported with its updates)")
    node.add_argument(
        "--data", type=Path, required=True, help="folder with train.* (and dev.*) annotated records"
    )
    node.add_argument(
        "--superlink", default=DEFAULT_SUPERLINK, help=f"host:port (default {DEFAULT_SUPERLINK})"
    )
    node.add_argument(
        "--port", type=int, default=9094, help="this SuperNode's own runtime port (default 9094)"
    )
    node.add_argument("--ca", type=Path, help="the federation's CA certificate (omit only with --insecure)")
    node.add_argument("--key", type=Path, help="this site's private key (from `fed keys`)")
    node.add_argument("--insecure", action="store_true")
    node.add_argument("--max-retries", type=int, help="give up connecting after this many tries")
    node.add_argument(
        "--threads", type=int,
        help="CPU threads for this site's training (default: every core); for SuperNodes sharing a machine",
    )  # fmt: skip
    run = kinds.add_parser("run", help="start a federated run on the SuperLink and follow it to the end")
    _connection_options(run)
    run.add_argument("--rounds", type=int)
    run.add_argument("--min-sites", type=int)
    run.add_argument("--strategy", choices=("fedavg", "fedprox"))
    run.add_argument(
        "--database", default=f"sqlite:///{DEFAULT_HOME / 'federated.db'}", help="where rounds are recorded"
    )
    run.add_argument(
        "--registry", type=Path, default=Path("runs/adapters"), help="adapter registry to publish to"
    )
    run.add_argument(
        "--run-config", default="", help="more settings, Flower's syntax: 'lr=0.002 dp-noise=0.5'"
    )
    split = kinds.add_parser("split", help="cut an annotated corpus into site folders (trials, benchmarks)")
    split.add_argument("corpus", type=Path, help="CoNLL BIO or JSONL spans")
    split.add_argument("out", type=Path)
    split.add_argument("--sites", nargs="+", default=["north", "south", "east"])
    split.add_argument("--mode", choices=("even", "skewed"), default="even")
    split.add_argument("--seed", type=int, default=0)
    medical = commands.add_parser("medical", help="medical: the federated site page")
    pages = medical.add_subparsers(dest="medical_command", required=True)
    ui = pages.add_parser("ui", help="the Streamlit page: rounds, sites, F1, bytes, how to join")
    ui.add_argument("--api", default="http://127.0.0.1:8000", help="the suite's URL")
    ui.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    ui.add_argument("--data", type=Path, help="this site's records folder (its counts are shown)")
    ui.add_argument("--port", type=int, default=8503)
    ui.add_argument("--host", default="127.0.0.1")


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--superlink", default=DEFAULT_SUPERLINK, help=f"host:port (default {DEFAULT_SUPERLINK})"
    )
    parser.add_argument("--ca", type=Path, help="the federation's CA certificate (omit only with --insecure)")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument(
        "--flwr-home", type=Path, default=DEFAULT_HOME / "flwr", help="the flwr CLI's settings folder"
    )


def run(args: argparse.Namespace) -> None:
    if args.command == "medical":
        sys.exit(
            ui_process(
                api=args.api, api_key=args.api_key, port=args.port, host=args.host, data=args.data
            ).wait()
        )
    command = args.fed_command
    if command == "certs":
        directory = deploy.make_certificates(args.out, hosts=args.host or ["localhost", "127.0.0.1"])
        print(f"verticals: CA and SuperLink certificate written to {directory} (give sites only ca.crt)")
    elif command == "keys":
        for name in args.names:
            private, public = deploy.make_node_key(args.out, name)
            print(f"verticals: {name}: private key {private} (stays at the site), public key {public}")
    elif command == "superlink":
        _secure_or_insecure(args.certs, args.insecure, "--certs")
        args.database.parent.mkdir(parents=True, exist_ok=True)
        certificates = None if args.insecure else args.certs
        _exec(
            deploy.superlink_command(
                port=args.port, host=args.host, database=args.database, certificates=certificates
            )
        )
    elif command == "supernode":
        _secure_or_insecure(args.ca, args.insecure, "--ca")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        from .sites import load_site, summarize

        site = load_site({"site": args.site, "data": str(args.data)})  # fails here, not mid-round
        print(f"verticals: site {site.name}: {summarize(site.train)['sentences']} training records found")
        _exec(deploy.supernode_command(
            superlink=args.superlink, port=args.port, ca=None if args.insecure else args.ca, key=args.key,
            node_config={"site": args.site, "data": str(args.data.resolve())}, max_retries=args.max_retries,
        ), threads=args.threads)  # fmt: skip
    elif command == "register":
        _connect(args)
        command = ["supernode", "register", str(args.public_key), CONNECTION, "--name", args.name]
        registered = _call_json(deploy.flwr_command(*command), args)
        deploy.remember_site(args.flwr_home, registered["node-id"], args.name)
        print(f"verticals: site {args.name} registered as SuperNode {registered['node-id']}")
    elif command == "sites":
        _connect(args)
        listing = _call_json(deploy.flwr_command("supernode", "ls", CONNECTION), args)
        print(sites_table(listing.get("nodes", []), deploy.site_names(args.flwr_home)))
    elif command == "run":
        _connect(args)
        args.registry.mkdir(parents=True, exist_ok=True)
        settings = {
            key: getattr(args, key)
            for key in ("rounds", "min_sites", "strategy")
            if getattr(args, key) is not None
        }
        settings.update(database=_absolute_url(args.database), registry=str(args.registry.resolve()))
        rendered = " ".join(f"{key.replace('_', '-')}={json.dumps(value)}" for key, value in settings.items())
        config = f"{args.run_config} {rendered}".strip()
        _call(deploy.flwr_command("run", str(APP_DIR), CONNECTION, "--stream", "--run-config", config), args)
    elif command == "split":
        from core_model.tagging import read_tagged

        from .sites import split_corpus, summarize, write_site

        shares = split_corpus(read_tagged(args.corpus), args.sites, mode=args.mode, seed=args.seed)
        for name, share in shares.items():
            directory = write_site(args.out / name, share)
            print(f"verticals: {name}: {summarize(share['train'])} -> {directory}")


def _secure_or_insecure(path: Path | None, insecure: bool, flag: str) -> None:
    if path is None and not insecure:
        raise ValueError(f"give {flag} (TLS), or --insecure for a closed test network")
    if path is not None and not insecure and not path.exists():
        raise FileNotFoundError(f"{path} does not exist")


def _connect(args: argparse.Namespace) -> None:
    _secure_or_insecure(args.ca, args.insecure, "--ca")
    deploy.write_connection(args.flwr_home, CONNECTION, args.superlink, ca=None if args.insecure else args.ca)


def _absolute_url(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        path = Path(url[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def _exec(command: list[str], *, threads: int | None = None) -> None:
    print("verticals: " + shlex.join(command), flush=True)
    os.execvpe(command[0], command, deploy.environment(threads=threads))


def _call(command: list[str], args: argparse.Namespace) -> None:
    result = subprocess.run(command, env=deploy.environment(args.flwr_home), check=False)
    if result.returncode:
        raise SystemExit(result.returncode)


def _call_json(command: list[str], args: argparse.Namespace) -> dict:
    """The `flwr` command's answer with `--format json`; its error message as ours when it fails."""
    result = subprocess.run(
        [*command, "--format", "json"], env=deploy.environment(args.flwr_home), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    try:
        answer = json.loads(result.stdout[result.stdout.index("{") :])
    except ValueError:
        answer = {"success": False, "error-message": (result.stderr or result.stdout).strip()}
    if result.returncode or not answer.get("success"):
        message = " ".join(str(answer.get("error-message") or "no answer").split())
        raise ValueError(f"flwr {shlex.join(command[1:3])} failed: {message}")
    return answer


def sites_table(nodes: list[dict], names: dict[str, str]) -> str:
    """The SuperNodes as `flwr supernode ls` gives them, with the names they were registered under."""
    rows = [("site", "node id", "status", "since")]
    for node in nodes:
        node_id, status = str(node.get("node-id")), str(node.get("status"))
        since = node.get("online-at") if status == "online" else node.get("offline-at")
        rows.append((names.get(node_id, "?"), node_id, status, str(since or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    online = sum(node.get("status") == "online" for node in nodes)
    return "\n".join([*lines, f"{online} of {len(nodes)} online"]).rstrip()


def ui_process(
    *, api: str, port: int, host: str = "127.0.0.1", api_key: str | None = None, data: Path | None = None
) -> subprocess.Popen[bytes]:
    """`streamlit run ui.py` against the API at `api`; `data`: this site's folder (counts shown)."""
    args = ["--data", str(data)] if data is not None else []
    return page_process(UI_SCRIPT, api=api, port=port, host=host, api_key=api_key, args=args)
