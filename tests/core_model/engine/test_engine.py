"""The engine against the simple reference: same greedy tokens, whatever the batching.

.venv/bin/python -m pytest tests/core_model/engine/test_engine.py -q
"""

import asyncio
import math
from dataclasses import replace

import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM, save_model
from core_model.engine import Engine, EngineConfig, SamplingParams, naive_generate

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    """Tiny, with weights large enough that greedy choices are not near-ties."""
    model = MoEForCausalLM(MoEConfig.preset("tiny").replace(initializer_range=0.15))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def _prompts(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 256, (n,), generator=generator).tolist() for n in lengths]


def _run_staggered(engine, prompts, params, arrivals):
    """Adds prompt i before step arrivals[i]; steps until all finish."""
    ids, finals, step = {}, {}, 0
    while len(finals) < len(prompts):
        for i, arrival in enumerate(arrivals):
            if arrival == step:
                ids[engine.add_request(prompts[i], params)] = i
        for output in engine.step():
            if output.finished:
                finals[ids[output.request_id]] = output
        step += 1
    return [finals[i] for i in range(len(prompts))]


def test_staggered_prompts_with_preemption_match_naive_generation(model):
    prompts = _prompts([3, 9, 17, 30, 5])
    engine = Engine(model, config=EngineConfig(block_size=4, max_cache_tokens=72, max_batched_tokens=24))
    outputs = _run_staggered(engine, prompts, GREEDY, arrivals=[0, 0, 2, 3, 7])
    assert engine.scheduler.num_preemptions > 0
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output.token_ids == naive_generate(model, prompt, max_new_tokens=GREEDY.max_tokens)
        assert output.finish_reason == "length"


def test_chunked_prefill_matches_naive_generation(model):
    [prompt] = _prompts([45], seed=1)
    engine = Engine(model, config=EngineConfig(block_size=8, max_batched_tokens=7, attention_chunk=16))
    [output] = engine.generate([prompt], GREEDY)
    assert output.token_ids == naive_generate(model, prompt, max_new_tokens=GREEDY.max_tokens)


def test_greedy_matches_transformers_generate(model, tmp_path):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(save_model(model, tmp_path)).eval()
    prompts = _prompts([4, 13], seed=2)
    outputs = Engine(model).generate(prompts, GREEDY)
    for prompt, output in zip(prompts, outputs, strict=True):
        generated = reference.generate(
            torch.tensor([prompt]),
            max_new_tokens=GREEDY.max_tokens,
            min_new_tokens=GREEDY.max_tokens,
            do_sample=False,
        )
        assert output.token_ids == generated[0, len(prompt) :].tolist()


def test_cache_holds_only_the_latent(model):
    engine = Engine(model, config=EngineConfig(max_cache_tokens=256))
    config = model.config
    assert engine.cache.bytes_per_token_per_layer == (config.kv_lora_rank + config.qk_rope_head_dim) * 4
    assert engine.cache.total_bytes == 256 * config.num_hidden_layers * engine.cache.bytes_per_token_per_layer


def test_blocks_are_freed_when_requests_finish_or_are_cancelled(model):
    engine = Engine(model, config=EngineConfig(block_size=4, max_cache_tokens=64))
    engine.generate(_prompts([10, 7]), GREEDY)
    assert engine.pool.num_free == engine.pool.num_blocks
    request_id = engine.add_request(_prompts([9])[0], GREEDY)
    engine.step()
    assert engine.pool.num_free < engine.pool.num_blocks
    engine.abort(request_id)
    [output] = engine.step()
    assert (output.request_id, output.finished, output.finish_reason) == (request_id, True, "abort")
    assert engine.pool.num_free == engine.pool.num_blocks


def test_prefix_cache_reuses_full_blocks(model):
    engine = Engine(model, config=EngineConfig(block_size=8))
    [shared] = _prompts([35], seed=3)
    first, second = shared + [7, 8], shared + [9]
    engine.generate([first], GREEDY)
    [output] = engine.generate([second], GREEDY)
    assert output.cached_prompt_tokens == 32  # four full blocks of the shared 35 tokens
    assert output.token_ids == naive_generate(model, second, max_new_tokens=GREEDY.max_tokens)


def test_max_tokens_and_stop_token_ids_end_a_request(model):
    [prompt] = _prompts([6], seed=4)
    free_run = naive_generate(model, prompt, max_new_tokens=8)
    stop_at = free_run[4]
    [output] = Engine(model).generate(
        [prompt], SamplingParams(max_tokens=8, temperature=0, stop_token_ids=[stop_at])
    )
    assert output.token_ids == free_run[: free_run.index(stop_at) + 1]
    assert output.finish_reason == "stop"


def test_first_token_ids_constrain_only_the_first_token(model):
    [prompt] = _prompts([6], seed=6)
    free_run = naive_generate(model, prompt, max_new_tokens=1)
    allowed = (free_run[0] + 1, free_run[0] + 2)
    [output] = Engine(model).generate(
        [prompt], SamplingParams(max_tokens=6, temperature=0, first_token_ids=allowed)
    )
    assert output.token_ids[0] in allowed  # the model's own first choice was not allowed
    rest = naive_generate(model, prompt + output.token_ids[:1], max_new_tokens=5)
    assert output.token_ids[1:] == rest  # free after the first
    with pytest.raises(ValueError, match="first_token_ids must be in"):
        Engine(model).add_request(prompt, SamplingParams(first_token_ids=[model.config.vocab_size]))


def test_copy_only_outputs_one_of_its_sources(model):
    [prompt] = _prompts([6], seed=7)
    eos = model.config.eos_token_id
    sources = ((10, 11, 12, 13, eos), (10, 11, 20, 21, 22, eos), (30, 31, eos))
    params = SamplingParams(max_tokens=10, temperature=0, copy_from=sources, copy_bias=math.inf)
    outputs = Engine(model).generate([prompt] * 2, [params, replace(params, copy_from=sources[2:])])
    assert tuple(outputs[0].token_ids) in sources and outputs[0].finish_reason == "stop"
    assert outputs[1].token_ids == [30, 31, eos]
    free = naive_generate(model, prompt, max_new_tokens=10)
    assert free[:3] != [30, 31, eos]  # the model alone would not have written it
    with pytest.raises(ValueError, match="copy_from token ids must be in"):
        Engine(model).add_request(prompt, replace(params, copy_from=((model.config.vocab_size,),)))


def test_a_finite_copy_bias_keeps_the_model_choosing(model):
    [prompt] = _prompts([6], seed=8)
    free = naive_generate(model, prompt, max_new_tokens=6)
    source = tuple(t + 1 for t in free)  # never what the model writes
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, copy_from=(source,))
    weak, strong = Engine(model).generate(
        [prompt] * 2, [replace(params, copy_bias=1e-3), replace(params, copy_bias=1e3)]
    )
    assert weak.token_ids == free and strong.token_ids == list(source)


def test_stream_yields_each_token_then_finishes(model):
    engine = Engine(model)
    [prompt] = _prompts([5], seed=5)

    async def collect():
        return [output async for output in engine.stream(prompt, GREEDY)]

    outputs = asyncio.run(collect())
    assert [o.delta_token_ids[0] for o in outputs] == naive_generate(model, prompt, max_new_tokens=12)
    assert outputs[-1].finished and not any(o.finished for o in outputs[:-1])


def test_the_stream_worker_sets_its_own_threads_and_leaves_the_callers(model):
    engine = Engine(model, config=EngineConfig(worker_threads=1))
    seen = []
    engine.step = lambda step=engine.step: (seen.append(torch.get_num_threads()), step())[1]
    before = torch.get_num_threads()

    async def collect():
        return [output async for output in engine.stream(_prompts([5], seed=6)[0], GREEDY)]

    asyncio.run(collect())
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_a_request_that_cannot_fit_is_refused(model):
    engine = Engine(model, config=EngineConfig(max_cache_tokens=32))
    with pytest.raises(ValueError, match="exceeds the cache's 32 tokens"):
        engine.add_request(list(range(3, 30)), SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="the model's context is 512"):
        Engine(model).add_request([5] * 600, SamplingParams(max_tokens=1))


def test_a_failing_step_ends_open_streams_with_an_error(model, monkeypatch):
    engine = Engine(model)
    monkeypatch.setattr(engine.runner, "forward", lambda batch: (_ for _ in ()).throw(RuntimeError("boom")))

    async def collect():
        return [output async for output in engine.stream(_prompts([5])[0], GREEDY)]

    outputs = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert outputs[-1].finish_reason == "error" and isinstance(engine.error, RuntimeError)
    assert engine.pool.num_free == engine.pool.num_blocks
    engine.shutdown()


def test_a_refused_request_leaves_the_engine_idle(model):
    engine = Engine(model, config=EngineConfig(max_cache_tokens=32))

    async def refused():
        async for _ in engine.stream(list(range(3, 40)), GREEDY):
            pass

    with pytest.raises(ValueError, match="exceeds the cache"):
        asyncio.run(refused())
    assert not engine.has_unfinished() and engine.num_waiting == 0


@pytest.mark.parametrize("native_bfloat16", [True, False])
def test_serving_config_takes_bfloat16_experts_only_where_they_pay(model, native_bfloat16, monkeypatch):
    from core_model.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "cpu_has_native_bfloat16", lambda: native_bfloat16)
    config = EngineConfig.for_serving(model, max_cache_tokens=256)
    assert config.max_cache_tokens == 256
    assert config.bfloat16_experts_from == (engine_module.BFLOAT16_EXPERTS_FROM if native_bfloat16 else None)
    half = MoEForCausalLM(model.config).to(torch.bfloat16)
    assert EngineConfig.for_serving(half).bfloat16_experts_from is None  # already half precision
    monkeypatch.setattr(engine_module, "BFLOAT16_EXPERTS_MAX_BYTES", 0)
    assert EngineConfig.for_serving(model).bfloat16_experts_from is None  # no room for the copies


def test_an_engine_with_bfloat16_experts_still_generates_the_greedy_text_of_a_long_prompt(model):
    import copy

    served = copy.deepcopy(model)
    engine = Engine(served, config=EngineConfig(block_size=4, bfloat16_experts_from=64))
    prompt = _prompts([120])[0]
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    [output] = engine.generate([prompt], params)
    assert served.model.layers[1].mlp.experts._bfloat16_copies  # the prefill took them
    assert output.token_ids == naive_generate(model, prompt, max_new_tokens=8)


def test_copying_ends_where_the_output_reaches_copy_until():
    from core_model import load_model, load_tokenizer

    tokenizer = load_tokenizer("embedded")
    model = load_model("embedded", dtype=torch.float32)
    source = tuple(tokenizer.encode("total = price * count\nzqx = qzx(xqz)\n"))
    params = SamplingParams(max_tokens=len(source), temperature=0, copy_from=(source,), copy_bias=math.inf)
    whole, first_line = Engine(model, tokenizer).generate(
        ["def total(price, count):\n    "] * 2, [params, replace(params, copy_until=("\n",))]
    )
    assert whole.text == "total = price * count\nzqx = qzx(xqz)\n"
    assert first_line.text.startswith("total = price * count\n") and "zqx = qzx" not in first_line.text
    with pytest.raises(ValueError, match="need a tokenizer"):
        Engine(model).add_request([1, 2], replace(params, copy_until=("\n",)))
