"""The suite's FastAPI app: built from settings alone, it serves the model it was told to load.

.venv/bin/python -m pytest tests/apps/test_suite.py -q
"""

import pytest
from fastapi.testclient import TestClient

from apps.suite import create_app
from core_model import MoEConfig, MoEForCausalLM, load_tokenizer, save_model
from core_model.serve import ServeSettings


def test_the_suite_serves_a_checkpoint_directory(checkpoint):
    app = create_app(
        ServeSettings(model=str(checkpoint), served_model_name="tiny-ckpt", max_cache_tokens=256)
    )
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny-ckpt"]
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
        chat = client.post("/v1/chat/completions", json=body).json()
        assert chat["object"] == "chat.completion" and chat["usage"]["completion_tokens"] <= 3


def test_a_tokenizer_larger_than_the_embedding_is_refused(checkpoint, tmp_path):
    save_model(MoEForCausalLM(MoEConfig.preset("tiny").replace(vocab_size=280)), tmp_path)
    load_tokenizer(checkpoint).save(tmp_path)  # 300 ids
    with pytest.raises(ValueError, match="300 ids but the model embeds only 280"):
        create_app(ServeSettings(model=str(tmp_path)))


def test_the_suite_loads_the_adapters_its_settings_name(checkpoint, adapter):
    settings = ServeSettings(
        model=str(checkpoint), served_model_name="tiny-ckpt", adapters=(("sql", str(adapter)),)
    )
    with TestClient(create_app(settings)) as client:
        models = client.get("/v1/models").json()["data"]
        assert [(m["id"], m["parent"]) for m in models] == [
            ("tiny-ckpt", None),
            ("tiny-ckpt:sql", "tiny-ckpt"),
        ]
        body = {"model": "tiny-ckpt:sql", "prompt": "x", "max_tokens": 2}
        assert client.post("/v1/completions", json=body).status_code == 200


def test_the_suite_serves_an_int8_model(checkpoint):
    settings = ServeSettings(model=str(checkpoint), served_model_name="tiny-ckpt", quantize="int8")
    with TestClient(create_app(settings)) as client:
        body = {"model": "tiny-ckpt", "prompt": "def", "max_tokens": 3, "temperature": 0}
        completion = client.post("/v1/completions", json=body).json()
        assert completion["usage"]["completion_tokens"] <= 3 and completion["choices"][0]["finish_reason"]
