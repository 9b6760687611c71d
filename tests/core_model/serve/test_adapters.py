"""LoRA adapters over HTTP: `model="BASE:NAME"` gets what the engine gives with that adapter;
`/v1/adapters` (and vLLM's aliases) load and unload them; every refusal has its status; metrics.

.venv/bin/python -m pytest tests/core_model/serve/test_adapters.py -q
"""

import asyncio
import gc

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core_model.engine import SamplingParams
from core_model.serve import ServeSettings, create_app
from core_model.serve.adapters import AdapterHolds

from .conftest import MODEL_NAME, wait_until_idle, write_adapter

ALPHA = f"{MODEL_NAME}:alpha"
PROMPT = "def wrap(text):\n    return "
MESSAGES = [{"role": "user", "content": "Wrap text at 70 columns."}]
MAX_TOKENS = 10
KEY = "s3cret"


@pytest.fixture(scope="module")
def alpha(engine, adapter_dir) -> str:
    """The adapter `alpha`, loaded in the engine before any request."""
    engine.load_adapter("alpha", adapter_dir)
    return "alpha"


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def _greedy(engine, prompt, adapter=None) -> str:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
    *_, final = engine.iterate(prompt, params, adapter=adapter)
    return final.text


def _error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# ----------------------------------------------------------------------------- generation


def test_an_adapter_model_gets_the_engines_text_with_that_adapter(client, engine, alpha):
    completion = client.completions.create(model=ALPHA, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    assert completion.model == ALPHA
    assert completion.choices[0].text == _greedy(engine, PROMPT, adapter=alpha)
    assert completion.choices[0].text != _greedy(engine, PROMPT)  # the adapter changes the output


def test_a_streamed_adapter_completion_matches_too(client, engine, alpha):
    chunks = client.completions.create(
        model=ALPHA, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in chunks) == _greedy(engine, PROMPT, adapter=alpha)


def test_an_adapter_chat_matches_streamed_or_not(client, engine, tokenizer, alpha):
    expected = _greedy(engine, tokenizer.encode_chat(MESSAGES, add_generation_prompt=True), adapter=alpha)
    chat = client.chat.completions.create(
        model=ALPHA, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert chat.model == ALPHA and chat.choices[0].message.content == expected
    chunks = client.chat.completions.create(
        model=ALPHA, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected


def test_models_lists_each_adapter_under_the_base(client, adapter_dir, alpha):
    base, *adapters = client.models.list().data
    assert base.id == MODEL_NAME and base.parent is None
    [listed] = [m for m in adapters if m.id == ALPHA]
    assert listed.parent == MODEL_NAME and listed.root == str(adapter_dir)


# ----------------------------------------------------------------------------- loading and unloading


def test_an_adapter_is_loaded_used_and_unloaded_through_the_api(http, engine, adapter_dir):
    response = http.post("/v1/adapters", json={"name": "beta", "path": str(adapter_dir)})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "name": "beta",
        "model": f"{MODEL_NAME}:beta",
        "path": str(adapter_dir),
        "resident": True,
    }
    assert "beta" in [a["name"] for a in http.get("/v1/adapters").json()["data"]]
    body = {"model": f"{MODEL_NAME}:beta", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    completion = http.post("/v1/completions", json=body).json()
    assert completion["choices"][0]["text"] == _greedy(engine, PROMPT, adapter="beta")

    assert http.delete("/v1/adapters/beta").json()["resident"] is False
    assert "beta" not in [a["name"] for a in http.get("/v1/adapters").json()["data"]]
    assert "beta" not in engine.adapters.paths
    _error(http.post("/v1/completions", json=body), 404)


def test_vllms_load_and_unload_routes_work_too(http, adapter_dir):
    response = http.post("/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": str(adapter_dir)})
    assert response.status_code == 200, response.text
    assert f"{MODEL_NAME}:gamma" in [m["id"] for m in http.get("/v1/models").json()["data"]]
    response = http.post("/v1/unload_lora_adapter", json={"lora_name": "gamma", "lora_int_id": 7})
    assert response.status_code == 200, response.text
    assert f"{MODEL_NAME}:gamma" not in [m["id"] for m in http.get("/v1/models").json()["data"]]
    _error(http.post("/v1/unload_lora_adapter", json={"lora_name": "gamma"}), 404)


# ----------------------------------------------------------------------------- refusals


def test_an_unknown_adapter_is_404_naming_it(http, alpha):
    body = {"model": f"{MODEL_NAME}:nope", "prompt": "x = 1", "max_tokens": 2}
    error = _error(http.post("/v1/completions", json=body), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'nope'" in error["message"] and "'alpha'" in error["message"]  # what is loaded instead
    chat = {"model": f"{MODEL_NAME}:nope", "messages": MESSAGES}
    assert "'nope'" in _error(http.post("/v1/chat/completions", json=chat), 404)["message"]


def test_an_adapter_of_another_base_is_404(http, alpha):
    body = {"model": "gpt-5:alpha", "prompt": "x = 1", "max_tokens": 2}
    assert "'gpt-5:alpha'" in _error(http.post("/v1/completions", json=body), 404)["message"]


def test_a_directory_without_an_adapter_is_400(http, tmp_path):
    error = _error(http.post("/v1/adapters", json={"name": "empty", "path": str(tmp_path)}), 400)
    assert error["message"] == f"adapter 'empty': no adapter_config.json in {tmp_path}"


def test_a_broken_adapter_config_is_400_naming_the_adapter(http, adapter_dir, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{not json")
    (tmp_path / "adapter_model.safetensors").write_bytes(
        (adapter_dir / "adapter_model.safetensors").read_bytes()
    )
    error = _error(http.post("/v1/adapters", json={"name": "broken", "path": str(tmp_path)}), 400)
    assert error["message"].startswith(f"adapter 'broken': cannot read {tmp_path}")


def test_lora_on_kv_b_proj_is_400_with_the_engines_reason(http, engine, tmp_path):
    path = write_adapter(tmp_path, engine.model, ("self_attn.kv_b_proj",))
    error = _error(http.post("/v1/adapters", json={"name": "kvb", "path": str(path)}), 400)
    assert "kv_b_proj is not supported: the absorbed MLA decode" in error["message"]
    assert "kvb" not in engine.adapters.paths


def test_a_name_with_a_colon_is_400(http, adapter_dir):
    error = _error(http.post("/v1/adapters", json={"name": "a:b", "path": str(adapter_dir)}), 400)
    assert "must be non-empty and contain no ':'" in error["message"]


def test_loading_a_name_twice_is_409(http, adapter_dir, alpha):
    response = http.post("/v1/adapters", json={"name": "alpha", "path": str(adapter_dir)})
    error = _error(response, 409)
    assert error["code"] == "adapter_exists" and "'alpha' is loaded already" in error["message"]
    alias = {"lora_name": "alpha", "lora_path": str(adapter_dir)}
    _error(http.post("/v1/load_lora_adapter", json=alias), 409)


def test_unloading_an_unknown_adapter_is_404(http):
    error = _error(http.delete("/v1/adapters/nope"), 404)
    assert "unknown adapter 'nope'" in error["message"]


def _lora_info(http) -> dict[str, str]:
    families = text_string_to_metric_families(http.get("/metrics").text)
    [sample] = [s for f in families if f.name == "vllm:lora_requests_info" for s in f.samples]
    return sample.labels


def test_unloading_an_adapter_in_use_is_409_until_its_requests_finish(http, engine, adapter_dir):
    http.post("/v1/adapters", json={"name": "busy", "path": str(adapter_dir)}).raise_for_status()
    body = {"model": f"{MODEL_NAME}:busy", "prompt": "x = 1", "stream": True}
    long = {"max_tokens": 300, "temperature": 0, "ignore_eos": True}  # a second or so
    with http.stream("POST", "/v1/completions", json={**body, **long}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # generating
        error = _error(http.delete("/v1/adapters/busy"), 409)
        assert error["code"] == "adapter_in_use" and "serving 1 request" in error["message"]
        assert _lora_info(http)["running_lora_adapters"] == "busy"
        assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
    assert http.delete("/v1/adapters/busy").status_code == 200
    wait_until_idle(engine)


# ----------------------------------------------------------------------------- metrics and auth


def test_metrics_count_requests_per_adapter_and_show_vllms_lora_info(client, http, engine, alpha):
    def count():
        lines = http.get("/metrics").text.splitlines()
        prefix = f'verticals:adapter_requests_total{{adapter="alpha",model_name="{MODEL_NAME}"}}'
        return sum(float(line.split()[-1]) for line in lines if line.startswith(prefix))

    before = count()
    client.completions.create(model=ALPHA, prompt="x = 1", max_tokens=2)
    client.completions.create(model=MODEL_NAME, prompt="x = 1", max_tokens=2)  # the base: not counted
    assert count() == before + 1
    wait_until_idle(engine)
    info = _lora_info(http)
    assert info == {"running_lora_adapters": "", "waiting_lora_adapters": "", "max_lora": "4"}


def test_adapter_routes_need_the_api_key(engine, tokenizer, adapter_dir):
    app = create_app(
        engine, tokenizer, ServeSettings(model="tiny", served_model_name=MODEL_NAME, api_key=KEY)
    )
    with TestClient(app) as keyed:
        body = {"name": "keyed", "path": str(adapter_dir)}
        _error(keyed.get("/v1/adapters"), 401)
        _error(keyed.post("/v1/adapters", json=body), 401)
        _error(keyed.delete("/v1/adapters/alpha"), 401)
        _error(keyed.post("/v1/load_lora_adapter", json={"lora_name": "k", "lora_path": "."}), 401)
        _error(keyed.post("/v1/unload_lora_adapter", json={"lora_name": "alpha"}), 401)
        assert keyed.get("/v1/adapters", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_when_requests_hold_every_adapter_slot_another_adapter_is_429(engine, tokenizer, alpha):
    app = create_app(engine, tokenizer, ServeSettings(model="tiny", served_model_name=MODEL_NAME))
    holds = app.state.serve.holds
    held = [holds.hold(f"other{i}", _nothing()) for i in range(engine.config.max_loras)]
    with TestClient(app) as client:
        response = client.post("/v1/completions", json={"model": ALPHA, "prompt": "x = 1", "max_tokens": 2})
        assert "adapter slots" in _error(response, 429)["message"]
    assert len(held) == engine.config.max_loras  # kept alive until here


async def _nothing():
    yield None


def test_a_hold_on_an_adapter_goes_with_outputs_never_read():
    holds = AdapterHolds()
    dropped = holds.hold("alpha", _nothing())  # a response cancelled before it started
    read = holds.hold("alpha", _nothing())
    assert holds.count("alpha") == 2 and holds.names() == {"alpha"}
    del dropped
    gc.collect()
    assert holds.count("alpha") == 1

    async def drain():
        return [o async for o in read]

    asyncio.run(drain())
    assert holds.count("alpha") == 0
