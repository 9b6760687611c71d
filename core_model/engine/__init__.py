"""Inference: a paged latent KV cache, continuous batching, sampling and streaming.

    from core_model.engine import Engine, EngineConfig, SamplingParams
    engine = Engine(model, tokenizer, EngineConfig())
    outputs = engine.generate(["def add(a, b):"], SamplingParams(max_tokens=32, temperature=0))

The model stays plain (`core_model.model`); the engine drives it from outside.
"""

from .engine import Engine, EngineConfig, RequestOutput
from .reference import naive_generate
from .sampling import SamplingParams

__all__ = ["Engine", "EngineConfig", "RequestOutput", "SamplingParams", "naive_generate"]
