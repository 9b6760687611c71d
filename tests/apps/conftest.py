"""A tiny checkpoint directory with its tokenizer, as `verticals serve --model DIR` expects.

.venv/bin/python -m pytest tests/apps -q
"""

import json
import string
import textwrap
from pathlib import Path

import pytest

from core_model import MoEConfig, MoEForCausalLM, save_model, train_tokenizer


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (json, textwrap, string)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(vocab_size=tokenizer.vocab_size))
    model.init_weights()
    directory = tmp_path_factory.mktemp("checkpoint")
    save_model(model, directory)
    tokenizer.save(directory)
    return directory
