"""The simulated production line: test images posted to the inspection API (`POST /qc/inspect`)
at a steady rate, each as a part seen by one station of one line, so the operators' dashboard
has a live line to watch.

    python -m apps.industrial_qc.replay --api http://127.0.0.1:8000                # 2 parts/s, for ever
    python -m apps.industrial_qc.replay --rate 5 --lines 3 --stations 2 --count 100
    python -m apps.industrial_qc.replay --data /data/line3 --split test --rate 1   # any accepted folder

    stop = threading.Event()
    report = replay(client, images=line_images(records, seed=0), stations=stations(2, 2), rate=2,
                    count=None, stop=stop)

The images are NEU-DET's test split (`read_neu_det(split="test")`, through the datasets folder
setting) unless `--data` names another folder; they are shuffled and cycled, and the parts go to
the stations round-robin (L1/S1, L1/S2, L2/S1, ...). Before the first part it waits for
`/qc/health` to say a model is served (the API may still be starting). One refused or lost
request is logged and counted, never fatal: an unreachable API is waited for again, a 503 (no
model) is retried after a pause. SIGTERM or Ctrl+C stops it between parts, with a summary.

It speaks HTTP only (`client.py`); it reads the data layer for the file list, not the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import DEFAULT_URL, QCApiError, QCClient

log = logging.getLogger(__name__)
RETRY_S = 2.0  # pause after an unreachable API or a 503 before the next try
LOG_EVERY_S = 10.0  # a progress line at most this often


@dataclass(frozen=True)
class Station:
    line_id: str
    station_id: str


@dataclass(frozen=True)
class ReplayReport:
    posted: int  # parts inspected
    failed: int  # of them failed (`passed` false)
    errors: int  # requests refused or lost
    seconds: float


class ReplayError(RuntimeError):
    """The API never came up, or came up with no model; the message says which."""


def stations(lines: int, per_line: int) -> list[Station]:
    """`lines` lines of `per_line` stations each: L1/S1, L1/S2, ..., L2/S1, ..."""
    if lines < 1 or per_line < 1:
        raise ValueError(f"need at least one line and one station, got {lines} x {per_line}")
    return [
        Station(f"L{line}", f"S{station}")
        for line in range(1, lines + 1)
        for station in range(1, per_line + 1)
    ]


def image_files(*, data: str | Path | None = None, split: str | None = "test") -> list[Path]:
    """The image files to replay: NEU-DET's `split` (found through the datasets folder setting),
    or the `split` of the folder `data` in any layout the data layer accepts (None: all of it)."""
    from .dataset import read_folder, read_neu_det  # reads files only; imported late (it imports torch)

    records = read_neu_det(split=split) if data is None else read_folder(data, split=split)  # type: ignore[arg-type]
    if not records:
        raise ReplayError(f"no images in {'NEU-DET' if data is None else data} (split {split})")
    return [record.path for record in records]


def line_images(paths: Sequence[Path], *, seed: int) -> Iterator[Path]:
    """`paths` in a seeded random order, reshuffled and repeated without end."""
    rng = random.Random(seed)
    order = list(paths)
    while order:
        rng.shuffle(order)
        yield from order


def wait_for_api(client: QCClient, *, timeout_s: float, stop: threading.Event) -> bool:
    """Returns True once /qc/health says a model is served, False if `stop` is set first; a
    ReplayError after `timeout_s` of no answer, or at once when the API says it has no model."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        try:
            health = client.health()
        except QCApiError as error:
            if error.status is not None:
                raise ReplayError(f"{client.base_url}/qc/health answered: {error.message}") from None
        else:
            if health.get("status") == "ok":
                return True
            raise ReplayError(f"the API at {client.base_url} serves no inspection model: {health}")
        if time.monotonic() > deadline:
            raise ReplayError(f"no inspection API at {client.base_url} after {timeout_s:.0f} s")
        stop.wait(RETRY_S)
    return False


def replay(
    client: QCClient,
    *,
    images: Iterator[Path],
    stations: Sequence[Station],
    rate: float,
    count: int | None,
    stop: threading.Event,
    threshold: float | None = None,
) -> ReplayReport:
    """Posts parts from `images` to the stations in turn, `rate` a second at most (0: as fast as
    the API answers), until `count` parts were tried (None: until `stop`). A refusal is logged
    and counted; an unreachable API or a 503 is retried with a pause, and counted once each."""
    started = last_log = next_at = time.monotonic()
    posted = failed = errors = tried = 0
    while not stop.is_set() and (count is None or tried < count):
        if (wait := next_at - time.monotonic()) > 0 and stop.wait(wait):
            break
        path = next(images, None)
        if path is None:
            break
        station = stations[tried % len(stations)]
        tried += 1
        next_at = max(next_at + (1 / rate if rate > 0 else 0), time.monotonic() - 1)
        try:
            part = post_part(client, path, station=station, threshold=threshold)
        except QCApiError as error:
            errors += 1
            log.warning("part %s at %s/%s not inspected: %s", path.name, station.line_id, station.station_id,
                        error.message)  # fmt: skip
            if error.status is None or error.status == 503:  # the API is away or has no model yet
                stop.wait(RETRY_S)
            continue
        posted += 1
        failed += not part["passed"]
        if time.monotonic() - last_log >= LOG_EVERY_S:
            last_log = time.monotonic()
            log.info("%d parts inspected, %d failed, %d errors", posted, failed, errors)
    return ReplayReport(
        posted=posted, failed=failed, errors=errors, seconds=round(time.monotonic() - started, 1)
    )


def post_part(
    client: QCClient, path: Path, *, station: Station, threshold: float | None = None
) -> dict[str, Any]:
    """One part through POST /qc/inspect; a file that cannot be read is a QCApiError too."""
    try:
        image = path.read_bytes()
    except OSError as error:
        raise QCApiError(400, f"cannot read {path}: {error}") from error
    return client.inspect(
        image, filename=path.name, line_id=station.line_id, station_id=station.station_id, threshold=threshold
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    """The replay's options, on its own parser or on `verticals qc replay`'s."""
    parser.add_argument("--api", default=DEFAULT_URL, help="the suite's URL (%(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("VERTICALS_API_KEY"))
    parser.add_argument("--rate", type=float, default=2.0, help="parts per second; 0: at once (%(default)s)")
    parser.add_argument("--lines", type=int, default=2, help="production lines (%(default)s)")
    parser.add_argument("--stations", type=int, default=2, help="inspection stations per line (%(default)s)")
    parser.add_argument("--count", type=int, help="stop after this many parts (default: run until stopped)")
    parser.add_argument("--data", type=Path, help="an image folder in any accepted layout (default: NEU-DET)")
    parser.add_argument("--split", default="test", help="the split to replay; 'all' for every image")
    parser.add_argument("--threshold", type=float, help="sent with each part (default: the API's)")
    parser.add_argument("--seed", type=int, default=0, help="the order of the images (%(default)s)")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for the API (%(default)s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apps.industrial_qc.replay", description="post test images to /qc/inspect as a line"
    )
    add_options(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The replay as a process: 0 after `--count` parts or a SIGTERM, 1 when the API never came
    up or serves no model."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s qc-replay %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per part: progress every 10 s
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        paths = image_files(data=args.data, split=None if args.split == "all" else args.split)
        line = stations(args.lines, args.stations)
    except (ValueError, FileNotFoundError) as error:  # DatasetError is a ValueError
        log.error("%s", error)
        return 1
    client = QCClient(args.api, api_key=args.api_key)
    try:
        log.info("waiting for the inspection API at %s ...", args.api)
        if not wait_for_api(client, timeout_s=args.wait, stop=stop):
            return 0
        log.info("replaying %d images to %d lines x %d stations at %s parts/s", len(paths), args.lines,
                 args.stations, args.rate or "full speed")  # fmt: skip
        report = replay(
            client, images=line_images(paths, seed=args.seed), stations=line, rate=args.rate,
            count=args.count, stop=stop, threshold=args.threshold,
        )  # fmt: skip
    except ReplayError as error:
        log.error("%s", error)
        return 1
    finally:
        client.close()
    log.info("stopped: %d parts inspected (%d failed), %d errors, in %.0f s", report.posted, report.failed,
             report.errors, report.seconds)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
