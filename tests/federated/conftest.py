"""A federated NER task on the tiny checkpoint (tests/conftest.py) and small shares of the real
NCBI-disease corpus, as three sites would hold them.

.venv/bin/python -m pytest tests/federated -q
"""

from __future__ import annotations

from typing import Any

import pytest

from core_model.datasets import dataset_dir
from core_model.tagging import read_tagged
from federated.site import Site
from federated.task import FederatedTask

LABELS = ("B-Disease", "I-Disease", "O")
SITES = ("north", "south", "east")


def ncbi(split: str, count: int) -> list[dict[str, Any]]:
    return read_tagged(dataset_dir("ncbi_disease") / f"{split}.tsv")[:count]


@pytest.fixture(scope="session")
def task(checkpoint) -> FederatedTask:
    return FederatedTask(base=str(checkpoint), labels=LABELS, rank=2, max_length=64, batch_size=8, lr=1e-2)


@pytest.fixture(scope="session")
def sites() -> list[Site]:
    train, dev = ncbi("train", 60), ncbi("devel", 30)
    return [Site(name, train[i::3], dev[i::3]) for i, name in enumerate(SITES)]
