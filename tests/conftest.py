"""Shared test settings: fast, deterministic, CPU. Tests marked `gpu` skip themselves without CUDA.
`checkpoint`: a tiny checkpoint directory with its tokenizer, as `verticals serve --model DIR` and
`load_model(DIR)` expect.

make test        # everything
"""

import json
import string
import textwrap
from pathlib import Path

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM, save_model, train_tokenizer

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (json, textwrap, string)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    torch.manual_seed(0)  # the same weights whichever test asks first (the global generator's state varies)
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(vocab_size=tokenizer.vocab_size))
    model.init_weights()
    directory = tmp_path_factory.mktemp("checkpoint")
    save_model(model, directory)
    tokenizer.save(directory)
    return directory
