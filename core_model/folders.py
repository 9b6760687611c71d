"""Folders written whole or not at all: an index, a knowledge base, anything a reader loads as a set
of files.

    with staged_folder(Path("runs/index")) as staging:
        (staging / "chunks.json").write_text(...)
    # runs/index now holds exactly what was written; a reader never saw half of it

It knows nothing about what the files hold; callers check what they are about to replace.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(directory: Path) -> Iterator[Path]:
    """A fresh folder beside `directory` to write into; when the block ends without an error it
    replaces `directory` (two renames on one file system), else it is deleted."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield staging
        _swap_in(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, directory: Path) -> None:
    if not directory.exists():
        os.rename(staging, directory)
        return
    retired = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(directory, retired)
    os.rename(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)
