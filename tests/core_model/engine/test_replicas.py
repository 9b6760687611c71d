"""Engine replicas: streamed requests spread over helper processes that each build the same engine.

Real helper processes throughout (each builds a tiny checkpoint written here, in about 2 s).

.venv/bin/python -m pytest tests/core_model/engine/test_replicas.py -q
"""

import asyncio
import json
import os
import signal
import string
import textwrap
import time
from pathlib import Path

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM, save_model, train_tokenizer
from core_model.engine import SamplingParams
from core_model.engine.lora import AdapterError
from core_model.engine.replicas import EngineReplicas, EngineSpec, build_engine, replicas_for
from tests import peft_adapters

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
TARGETS = ("self_attn.q_a_proj", "self_attn.o_proj")


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> EngineSpec:
    """A tiny checkpoint with its tokenizer, weights large enough that greedy choices are not
    near-ties, served in float32 (no bfloat16 experts)."""
    directory = tmp_path_factory.mktemp("checkpoint")
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (json, textwrap, string)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    tokenizer.save(directory)
    config = MoEConfig.preset("tiny").replace(vocab_size=tokenizer.vocab_size, initializer_range=0.15)
    model = MoEForCausalLM(config)
    model.init_weights(torch.Generator().manual_seed(0))
    save_model(model, directory)
    config_fields = {"max_cache_tokens": 2048, "bfloat16_experts_from": None}
    return EngineSpec(model=str(directory), dtype=torch.float32, config=config_fields)


@pytest.fixture(scope="module")
def adapter(spec, tmp_path_factory) -> Path:
    model = build_engine(spec).model
    return peft_adapters.write_adapter(tmp_path_factory.mktemp("adapter"), model, TARGETS, seed=3)


@pytest.fixture(scope="module")
def replicas(spec, adapter):
    engine = EngineReplicas(build_engine(spec), spec, helpers=1)
    engine.load_adapter("a", adapter)
    yield engine
    engine.shutdown()


def prompts(count: int, length: int = 20, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 256, (length,), generator=generator).tolist() for _ in range(count)]


async def streamed(engine, prompt, params=GREEDY, adapter=None) -> tuple[list[int], str]:
    tokens: list[int] = []
    async for output in engine.stream(prompt, params, adapter=adapter):
        tokens += output.delta_token_ids
    return tokens, output.finish_reason


def stream_all(engine, batch, adapter=None) -> list[tuple[list[int], str]]:
    async def run():
        return await asyncio.gather(*(streamed(engine, p, adapter=adapter) for p in batch))

    return asyncio.run(run())


@pytest.mark.parametrize("adapter_name", [None, "a"])
def test_streams_spread_over_the_replicas_give_what_one_engine_gives(replicas, adapter_name):
    batch = prompts(6, seed=1 if adapter_name else 2)
    before = list(replicas.routed)
    results = stream_all(replicas, batch, adapter=adapter_name)
    routed = [after - was for after, was in zip(replicas.routed, before, strict=True)]
    assert sum(routed) == 6 and min(routed) >= 2  # both replicas served
    alone = [replicas.local.generate([p], GREEDY, adapter=adapter_name)[0].token_ids for p in batch]
    assert [tokens for tokens, _ in results] == alone
    assert all(reason == "length" for _, reason in results)
    if adapter_name:  # the adapter changes what the model says, in the helper too
        base = [replicas.local.generate([p], GREEDY)[0].token_ids for p in batch]
        assert base != alone


def test_a_request_whose_first_block_a_replica_served_goes_back_to_it(replicas):
    [prompt] = prompts(1, length=40, seed=3)
    stream_all(replicas, [prompt])
    chosen = [replicas._choose(prompt, None) for _ in range(3)]  # loads tie at 0: affinity decides
    assert chosen[0] is chosen[1] is chosen[2]
    other = prompt[:15] + [7] + prompt[16:]  # another first block: a replica of its own choosing
    assert replicas._choose(other, None) is replicas._choose(other, None)


def test_an_adapter_that_fails_to_load_is_loaded_nowhere(replicas, tmp_path):
    with pytest.raises(AdapterError):
        replicas.load_adapter("broken", tmp_path)
    assert "broken" not in replicas.adapters.paths
    with pytest.raises(AdapterError, match="unknown adapter 'broken'"):
        stream_all(replicas, prompts(1), adapter="broken")


def test_a_bad_request_fails_before_it_reaches_a_replica(replicas):
    with pytest.raises(ValueError, match="prompt token ids must be in"):
        stream_all(replicas, [[5, 10_000]])
    assert replicas.num_running == 0


def test_closing_a_stream_early_frees_its_place_on_the_helper(replicas):
    long = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)

    async def first_tokens_then_leave(prompt):
        async for output in replicas.stream(prompt, long):
            if len(output.token_ids) >= 2:
                break

    async def run():
        await asyncio.gather(*(first_tokens_then_leave(p) for p in prompts(4, seed=4)))

    asyncio.run(run())
    deadline = time.monotonic() + 10
    while replicas.num_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replicas.num_running == 0


def test_a_helper_that_dies_fails_its_requests_and_is_started_again_with_the_adapters(spec, adapter):
    engine = EngineReplicas(build_engine(spec), spec, helpers=1)
    try:
        engine.load_adapter("a", adapter)
        helper = engine._helpers[0]
        long = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)

        async def kill_while_streaming():
            stream = engine._stream_on(helper, prompts(1, seed=5)[0], long, adapter="a")
            reasons = []
            async for output in stream:
                if len(output.token_ids) == 2:
                    os.kill(helper.pid, signal.SIGKILL)
                reasons.append(output.finish_reason)
            return reasons[-1]

        assert asyncio.run(kill_while_streaming()) == "error"
        deadline = time.monotonic() + 60
        while engine._helpers[0] is helper or not engine._helpers[0].alive:
            assert time.monotonic() < deadline, "the helper was not started again"
            time.sleep(0.1)
        batch = prompts(4, seed=6)
        results = stream_all(engine, batch, adapter="a")
        alone = [engine.local.generate([p], GREEDY, adapter="a")[0].token_ids for p in batch]
        assert [tokens for tokens, _ in results] == alone and engine.routed[1] >= 1
    finally:
        engine.shutdown()


def test_a_helper_that_cannot_build_its_engine_says_why(spec, tmp_path):
    missing = EngineSpec(model=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        EngineReplicas(build_engine(spec), missing, helpers=1)


def test_replicas_for_is_one_per_core_on_cpu_and_one_on_cuda():
    cpu = EngineSpec(model="embedded", dtype=torch.float32)
    assert replicas_for(cpu) == min(len(os.sched_getaffinity(0)), 4)
    assert replicas_for(EngineSpec(model="embedded", device="cuda")) == 1


def test_an_adapter_in_use_on_a_helper_is_not_unloaded_anywhere(replicas):
    long = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)
    helper = replicas._helpers[0]

    async def unload_while_streaming():
        async for output in replicas._stream_on(helper, prompts(1, seed=7)[0], long, adapter="a"):
            if len(output.token_ids) == 2:
                with pytest.raises(ValueError, match="serving requests"):
                    replicas.unload_adapter("a")
                break

    asyncio.run(unload_while_streaming())
    assert "a" in replicas.adapters.paths
    stream_all(replicas, prompts(2, seed=8), adapter="a")  # still served by both


def test_requests_beyond_a_helpers_slots_count_as_waiting(spec):
    one_slot = EngineSpec(model=spec.model, dtype=spec.dtype, config=spec.config | {"max_sequences": 1})
    engine = EngineReplicas(build_engine(one_slot), one_slot, helpers=1)
    long = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    counts: list[tuple[int, int]] = []

    async def first_token(prompt) -> None:
        async for _ in engine.stream(prompt, long):
            break

    async def run() -> None:
        streams = [asyncio.create_task(streamed(engine, p, long)) for p in prompts(6, seed=6)]
        # Routed before the six start (a task runs only once this one waits): it takes a slot at
        # once, and its first token comes while the six hold the other slot or wait.
        await first_token(prompts(1, seed=7)[0])
        counts.append((engine.num_running, engine.num_waiting))
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        engine.shutdown()
    assert engine.routed[1] >= 3  # the helper holds half of the 7
    running, waiting = counts[0]
    assert running == 2 and waiting >= 3  # one slot each: everyone else waits, wherever it is
