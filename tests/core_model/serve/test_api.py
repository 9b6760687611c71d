"""The OpenAI-compatible API through the `openai` client against a real server: the same greedy
text as `Engine.generate`, streamed or not; fill-in-the-middle; models; metrics.

.venv/bin/python -m pytest tests/core_model/serve/test_api.py -q
"""

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core_model.engine import SamplingParams

from .conftest import MODEL_NAME, wait_until_idle

PROMPT = "def wrap(text):\n    return "
MESSAGES = [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "Wrap text at 70 columns."},
]
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def _greedy(engine, prompt, *, stops=()):
    [output] = engine.generate(
        [prompt], SamplingParams(max_tokens=MAX_TOKENS, temperature=0, stop_token_ids=stops)
    )
    return output


def test_completion_matches_engine_generate(client, engine):
    completion = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0
    )
    expected = _greedy(engine, PROMPT)
    assert completion.id.startswith("cmpl-") and completion.object == "text_completion"
    assert completion.model == MODEL_NAME
    [choice] = completion.choices
    assert choice.text == expected.text and choice.index == 0
    assert choice.finish_reason == expected.finish_reason
    assert completion.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert completion.usage.completion_tokens == len(expected.token_ids)
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_streamed_completion_matches_engine_generate(client, engine):
    chunks = list(
        client.completions.create(
            model=MODEL_NAME,
            prompt=PROMPT,
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    expected = _greedy(engine, PROMPT)
    *content, usage_chunk = chunks
    assert {c.object for c in chunks} == {"text_completion"} and len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in content) == expected.text
    assert [c.choices[0].finish_reason for c in content][-1] == expected.finish_reason
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == len(expected.token_ids)


def test_token_id_prompt_matches_engine_generate(client, engine):
    ids = [5, 80, 81, 200, 17]
    completion = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=MAX_TOKENS, temperature=0)
    assert completion.choices[0].text == _greedy(engine, ids).text
    assert completion.usage.prompt_tokens == len(ids)


def test_suffix_builds_a_fill_in_the_middle_prompt(client, engine, tokenizer):
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    completion = client.completions.create(
        model=MODEL_NAME, prompt=prefix, suffix=suffix, max_tokens=MAX_TOKENS, temperature=0
    )
    fim = tokenizer.fim_prompt(prefix, suffix)
    assert completion.usage.prompt_tokens == len(tokenizer.encode(fim, add_bos=True))
    assert completion.choices[0].text == _greedy(engine, fim).text


def test_chat_completion_matches_engine_generate(client, engine, tokenizer):
    chat = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    expected = _greedy(
        engine, tokenizer.encode_chat(MESSAGES, add_generation_prompt=True), stops=tokenizer.chat_stop_ids
    )
    assert chat.id.startswith("chatcmpl-") and chat.object == "chat.completion"
    [choice] = chat.choices
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert chat.usage.prompt_tokens == len(expected.prompt_token_ids)


def test_streamed_chat_matches_engine_generate(client, engine, tokenizer):
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME, messages=MESSAGES, max_completion_tokens=MAX_TOKENS, temperature=0, stream=True
        )
    )
    expected = _greedy(
        engine, tokenizer.encode_chat(MESSAGES, add_generation_prompt=True), stops=tokenizer.chat_stop_ids
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_logprobs_have_one_entry_per_token(client):
    completion = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, logprobs=3
    )
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == completion.usage.completion_tokens
    assert all(
        len(top) <= 3 and lp <= 0
        for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs, strict=True)
    )
    chat = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)
    # greedy: the chosen token is the most likely one
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in content)


def test_models_lists_the_served_model(client):
    [model] = client.models.list().data
    assert model.id == MODEL_NAME and model.object == "model"


def _scrape(base_url) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base_url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_use_vllm_names_and_count_requests(client, base_url, engine):
    wait_until_idle(engine)
    before = _scrape(base_url)
    completion = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, extra_body={"ignore_eos": True}
    )
    after = _scrape(base_url)

    def delta(name, **labels):
        key = (name, tuple(sorted({"model_name": MODEL_NAME, **labels}.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("vllm:request_success_total", finished_reason="length") == 1
    assert delta("vllm:prompt_tokens_total") == completion.usage.prompt_tokens
    assert delta("vllm:generation_tokens_total") == MAX_TOKENS
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    assert delta("vllm:time_per_output_token_seconds_count") == MAX_TOKENS - 1
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert (gauge, (("model_name", MODEL_NAME),)) in after
