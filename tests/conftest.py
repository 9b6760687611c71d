"""Shared test settings: fast, deterministic, CPU. Tests marked `gpu` skip themselves without CUDA.

make test        # everything
"""

import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
