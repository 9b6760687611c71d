"""What every benchmark script shares: argument parsing helpers, the environment record, tables.

Not a benchmark itself; each script under benchmarks/ imports it.
"""

from __future__ import annotations

import contextlib
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import transformers


def comma_separated(cast: Callable[[str], object]) -> Callable[[str], list]:
    """An argparse type for "1,8,32" -> [1, 8, 32]."""
    return lambda text: [cast(item) for item in text.split(",") if item]


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


def write_report(report: dict, out: Path) -> None:
    """The benchmark's JSON, written where `--out` says."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
