"""Where the licensed datasets live: `$VERTICALS_DATASETS/<name>/`, else `../shared/datasets/<name>/`
beside the repository. Each holds a SOURCE.md with its origin, licence and splits.

    path = dataset_dir("banking77") / "train.csv"

The project never copies dataset text into itself; it reads it from here at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "VERTICALS_DATASETS"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def datasets_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def dataset_dir(name: str) -> Path:
    """The directory of dataset `name`, or FileNotFoundError saying where it was looked for."""
    path = datasets_root() / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"dataset {name!r} not found at {path}; set {ENV_VAR} to the folder that holds it"
        )
    return path
