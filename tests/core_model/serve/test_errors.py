"""Errors in OpenAI's body and status codes, auth, the queue limit, and clients that hang up.

.venv/bin/python -m pytest tests/core_model/serve/test_errors.py -q
"""

import httpx
import pytest
from fastapi.testclient import TestClient

from core_model.serve import ServeSettings, create_app

from .conftest import MODEL_NAME, wait_until_idle

KEY = "s3cret"
LONG = {"max_tokens": 4000, "temperature": 0, "ignore_eos": True}  # seconds: far longer than tests wait


@pytest.fixture(scope="module")
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def keyed(engine, tokenizer):
    """A second app on the same engine: an API key, and a queue that takes nothing (max_queue=0)."""
    app = create_app(
        engine, tokenizer, ServeSettings(model="tiny", served_model_name=MODEL_NAME, api_key=KEY, max_queue=0)
    )
    with TestClient(app) as client:
        yield client


def _error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _complete(http, **body):
    return http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "x = 1", **body})


def test_malformed_json_is_422(http):
    response = http.post(
        "/v1/completions", content=b'{"prompt": ', headers={"Content-Type": "application/json"}
    )
    assert "not valid JSON" in _error(response, 422)["message"]


def test_a_field_of_the_wrong_type_is_422_naming_it(http):
    error = _error(_complete(http, max_tokens="many"), 422)
    assert error["param"] == "max_tokens" and "max_tokens" in error["message"]
    error = _error(
        http.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "hi"}]}), 422
    )
    assert error["param"] == "messages" and "messages.0.role" in error["message"]


def test_a_prompt_longer_than_the_context_is_400_naming_the_limit(http, engine):
    context = engine.model.config.max_position_embeddings
    error = _error(_complete(http, prompt=[5] * (context + 10)), 400)
    assert str(context) in error["message"]


@pytest.mark.parametrize("max_tokens", [0, 100_000])
def test_max_tokens_out_of_range_is_400(http, max_tokens):
    error = _error(_complete(http, max_tokens=max_tokens), 400)
    assert error["param"] == "max_tokens" and "max_tokens" in error["message"]


def test_a_sampling_value_out_of_range_is_400_naming_the_field(http):
    error = _error(_complete(http, temperature=-1), 400)
    assert error["param"] == "temperature"


def test_n_above_one_is_400(http):
    assert _error(_complete(http, n=2), 400)["message"] == "n must be 1"


def test_an_unknown_model_is_404(http):
    error = _error(_complete(http, model="gpt-5"), 404)
    assert error["code"] == "model_not_found" and "gpt-5" in error["message"]


def test_an_unknown_route_gets_an_openai_error_body(http):
    _error(http.get("/v1/nothing"), 404)


def test_without_the_key_a_request_is_401(keyed):
    _error(keyed.get("/v1/models"), 401)
    _error(keyed.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    _error(keyed.get("/metrics"), 401)
    assert keyed.get("/health").status_code == 200  # load balancers probe without a key
    assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_openapi_declares_the_key_as_a_bearer_scheme(keyed):
    schema = keyed.get("/openapi.json").json()
    [(name, scheme)] = schema["components"]["securitySchemes"].items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert schema["paths"]["/v1/models"]["get"]["security"] == [{name: []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_a_full_queue_is_429_with_retry_after(keyed):
    body = {"model": MODEL_NAME, "prompt": "x = 1", "max_tokens": 2}
    response = keyed.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    error = _error(response, 429)
    assert int(response.headers["Retry-After"]) >= 1 and error["type"] == "rate_limit_error"


def _successes(http) -> float:
    lines = http.get("/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("vllm:request_success_total{"))


def test_disconnecting_mid_stream_aborts_and_frees_the_cache(http, engine):
    successes = _successes(http)
    with http.stream(
        "POST", "/v1/completions", json={"model": MODEL_NAME, "prompt": "x = 1", "stream": True, **LONG}
    ) as response:
        assert response.status_code == 200
        events = response.iter_lines()
        data = [line for line in (next(events) for _ in range(4)) if line.startswith("data: ")]
        assert len(data) == 2 and engine.has_unfinished()
    # leaving the block closes the connection with the body unread
    wait_until_idle(engine)
    assert _successes(http) == successes  # aborted, not finished


def test_disconnecting_before_a_plain_response_aborts_and_frees_the_cache(http, engine):
    successes = _successes(http)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "x = 1", **LONG}, timeout=0.5)
    wait_until_idle(engine)
    assert _successes(http) == successes  # aborted, not finished
