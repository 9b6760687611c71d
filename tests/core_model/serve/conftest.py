"""Fixtures for the server tests: a tiny model, a tiny tokenizer, an engine, the app served by a
real uvicorn on 127.0.0.1 in a background thread, and a LoRA adapter for that model on disk.

.venv/bin/python -m pytest tests/core_model/serve -q
"""

import json
import string
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM, Tokenizer, train_tokenizer
from core_model.engine import Engine, EngineConfig
from core_model.serve import ServeSettings, create_app
from tests import peft_adapters
from tests.loopback import serving

MODEL_NAME = "tiny-test"
CONTEXT = 4096  # tokens; generating them all takes seconds
TOKENIZER_VOCAB = 300  # train_tokenizer needs >= 266 ids (10 special + 256 bytes)
ADAPTER_TARGETS = ("self_attn.q_a_proj", "self_attn.o_proj", "mlp.shared_experts.up_proj", "mlp.gate_proj")


def wait_until_idle(engine: Engine, timeout: float = 10.0) -> None:
    """Polls until the engine has no unfinished request and every cache block is free."""
    deadline = time.monotonic() + timeout
    while engine.has_unfinished() or engine.pool.num_free != engine.pool.num_blocks:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"engine still busy after {timeout}s: unfinished={engine.has_unfinished()}, "
                f"free blocks {engine.pool.num_free}/{engine.pool.num_blocks}"
            )
        time.sleep(0.01)


def write_adapter(directory: Path, model: torch.nn.Module, targets=ADAPTER_TARGETS, *, seed: int = 1) -> Path:
    return peft_adapters.write_adapter(directory, model, targets, seed=seed)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (json, textwrap, string)]
    return train_tokenizer(corpus, vocab_size=TOKENIZER_VOCAB)


@pytest.fixture(scope="module")
def engine(tokenizer) -> Engine:
    # Weights large enough that greedy choices are not near-ties (see tests/core_model/engine); a
    # context long enough that a request cut short by a client surely had not finished anyway.
    config = MoEConfig.preset("tiny").replace(
        vocab_size=tokenizer.vocab_size, initializer_range=0.15, max_position_embeddings=CONTEXT
    )
    model = MoEForCausalLM(config)
    model.init_weights(torch.Generator().manual_seed(0))
    return Engine(model.eval(), tokenizer, EngineConfig(max_cache_tokens=CONTEXT, max_batched_tokens=256))


@pytest.fixture(scope="module")
def settings() -> ServeSettings:
    return ServeSettings(model="tiny", served_model_name=MODEL_NAME, max_queue=8)


@pytest.fixture(scope="module")
def base_url(engine, tokenizer, settings) -> Iterator[str]:
    with serving(create_app(engine, tokenizer, settings)) as url:
        yield url


@pytest.fixture(scope="module")
def adapter_dir(engine, tmp_path_factory) -> Path:
    """A PEFT LoRA directory for the served model, strong enough to change its greedy text."""
    return write_adapter(tmp_path_factory.mktemp("adapter"), engine.model)
