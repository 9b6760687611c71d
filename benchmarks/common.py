"""What every benchmark script shares: argument parsing helpers, the environment record, tables.

Not a benchmark itself; each script under benchmarks/ imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import transformers
import urllib3

ROOT = Path(__file__).resolve().parents[1]


def comma_separated(cast: Callable[[str], object]) -> Callable[[str], list]:
    """An argparse type for "1,8,32" -> [1, 8, 32]."""
    return lambda text: [cast(item) for item in text.split(",") if item]


def section_parser(doc: str, sections: tuple[str, ...], *, results: str) -> argparse.ArgumentParser:
    """A benchmark's parser with --sections (default: all of them) and --out (default
    benchmarks/results/<results>); parse it with `parse_sections`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--sections", type=comma_separated(str), default=list(sections))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / results)
    parser.set_defaults(known_sections=sections)
    return parser


def parse_sections(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed arguments, or a usage error naming the unknown sections."""
    args = parser.parse_args(argv)
    if unknown := set(args.sections) - set(args.known_sections):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {args.known_sections}")
    return args


def environment(devices: list[str]) -> dict:
    """Versions, threads and processors: what a figure needs beside it to be compared."""
    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": cpu_model(),
        "devices": devices,
    }
    if "cuda" in devices:
        env["gpu"] = torch.cuda.get_device_name()
    return env


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def aligned_rows(rows: list[list[str]]) -> list[str]:
    """Rows of cells right-aligned in columns, with a rule under the first row (the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0-100) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:  # a tiny race with other processes is acceptable here
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def suite_server(options: list[str], *, log: Path, timeout_s: float = 300) -> Iterator[str]:
    """`verticals serve OPTIONS` in its own process (as users run it, so a benchmark's clients do
    not share its interpreter lock) on a free loopback port; yields its URL once /health answers,
    stops it after. Its output goes to `log`, whose tail is raised when it does not come up."""
    port = free_port()
    command = [sys.executable, "-m", "apps.cli", "serve", "--port", str(port), *options]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if urllib3.request("GET", f"{url}/health", timeout=2, retries=False).status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the suite did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def post(http: urllib3.HTTPConnectionPool, path: str, **fields) -> urllib3.BaseHTTPResponse:
    """POST `path` through `http` (`json=` a body, or `fields=` a multipart form); an HTTP error
    raises with the server's message."""
    response = http.request("POST", path, **fields)
    if response.status >= 400:
        message = response.data[:500].decode(errors="replace")
        raise RuntimeError(f"POST {path}: HTTP {response.status}: {message}")
    return response


def concurrent_latency(
    url: str,
    *,
    clients: int,
    requests: int,
    send: Callable,
    setup: Callable | None = None,
    percentiles: tuple[int, ...] = (50, 99),
) -> dict:
    """`clients` threads, each with its own keep-alive connection (a urllib3 pool of one), each
    calling `send(http, state, client, i)` for i < `requests` one after another, `state` being what
    `setup(http)` returned (untimed), after one warm-up client whose first calls pay for lazy
    initialisation: the latency percentiles of the calls and the requests per second. The warm-up
    is client number `clients`, so a `send` that picks its inputs by client number gives the timed
    clients inputs the warm-up never sent (a server's caches see each of them for the first time).

    The clients share the server's cores, so they are kept light: urllib3 costs a third of httpx's
    CPU per request (0.3 against 0.95 ms for the fraud desk's scoring, which then served 700
    requests/s instead of 600)."""
    target = urllib3.util.parse_url(url)

    def client_loop(client: int) -> list[float]:
        times = []
        with urllib3.HTTPConnectionPool(
            target.host, target.port, maxsize=1, block=True, timeout=60, retries=False
        ) as http:
            state = setup(http) if setup is not None else None
            for i in range(requests):
                started = time.perf_counter()
                send(http, state, client, i)
                times.append((time.perf_counter() - started) * 1000)
        return times

    client_loop(clients)  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for ts in pool.map(client_loop, range(clients)) for t in ts]
    wall = time.perf_counter() - started
    report: dict = {"clients": clients, "requests": len(times)}
    report |= {f"p{q}_ms": round(percentile(times, q), 1) for q in percentiles}
    return report | {"requests_per_s": round(len(times) / wall, 2)}


WRK_SCRIPT = ROOT / "benchmarks" / "wrk_post_bodies.lua"
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_latency(url: str, path: str, bodies: list[dict], *, clients: int, seconds: int) -> dict:
    """`clients` keep-alive connections of wrk (a load generator in C: about a tenth of urllib3's
    CPU per request, so more of the shared cores go to the server), each POSTing its own share of
    `bodies` one after another for `seconds`: the latency percentiles wrk reports and the requests
    per second. Needs `wrk` on the PATH (`apt-get install wrk`); each body is sent at most once."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk`")
    threads = min(2, clients)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as lines:
        lines.writelines(json.dumps(body, default=str) + "\n" for body in bodies)
        lines.flush()
        command = [
            "wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT),
            url, "--", lines.name, str(threads), path,
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True)
    output = run.stdout + run.stderr
    if run.returncode or "Non-2xx" in output or "Socket errors" in output or "out of bodies" in output:
        raise RuntimeError(f"wrk saw failed requests:\n{output}")
    report: dict = {"clients": clients, "requests": int(re.search(r"(\d+) requests in", output)[1])}
    for q, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", output, re.MULTILINE):
        report[f"p{q}_ms"] = round(float(value) * WRK_UNITS_MS[unit], 1)
    return report | {"requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]), 2)}


def run_sections(
    report: dict,
    *,
    sections: tuple[str, ...],
    chosen: list[str],
    benches: dict,
    args,
    out: Path | None = None,
) -> None:
    """Runs each chosen section in `sections` order into `report[name]`, timing it, and prints a
    line per section as it ends (a long run shows progress). With `out`, the report so far is
    written there after each section, so a failure hours into a run keeps what it measured."""
    for name in sections:
        if name in chosen:
            started = time.perf_counter()
            report[name] = benches[name](args)
            report[name]["section_s"] = round(time.perf_counter() - started, 1)
            print(f"{name}: {json.dumps(report[name])[:300]}", flush=True)
            if out is not None:
                write_report(report, out, quiet=True)


def write_report(report: dict, out: Path, *, quiet: bool = False) -> None:
    """The benchmark's JSON, written where `--out` says."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not quiet:
        print(f"wrote {out}")
