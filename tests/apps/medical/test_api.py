"""POST /medical/ner and GET /medical/federation over HTTP on loopback, the way clients call them:
character offsets that slice the text sent, PHI masked, a newly published adapter picked up,
clear 4xx for bad input."""

from __future__ import annotations

import shutil

import httpx
import pytest

from core_model.train.registry import AdapterRegistry, content_hash
from federated.records import RoundRecord, RoundStore

from .conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TEXT = (
    "Seen by Dr. Anna Berg on 03/04/2024. Two siblings with ataxia-telangiectasia and a father with "
    "colorectal cancer were tested for the APC gene."
)


def message(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


def ner(suite: str, text: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{suite}/medical/ner", json={"text": text}, headers=AUTH, timeout=60, **kwargs)


def test_entities_carry_offsets_into_the_text_and_phi_is_masked(suite, ner_adapter):
    response = ner(suite, TEXT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"entities", "phi", "text_deidentified", "adapter", "latency_ms"}
    for entity in body["entities"]:
        assert set(entity) == {"label", "start", "end", "text", "score"}
        assert TEXT[entity["start"] : entity["end"]] == entity["text"] and entity["label"] == "Disease"
        assert 0.0 < entity["score"] <= 1.0
    assert [p["kind"] for p in body["phi"]] == ["NAME", "DATE"]
    assert body["text_deidentified"].startswith("Seen by Dr. [NAME] on [DATE]. Two siblings")
    assert body["adapter"]["version"] == content_hash(ner_adapter)


def test_empty_and_oversized_texts(suite, medical_settings):
    assert ner(suite, "").json()["entities"] == []
    too_long = ner(suite, "a" * (medical_settings.max_text_chars + 1))
    assert too_long.status_code == 413 and "limit is" in message(too_long)


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "text"), ({"text": 3}, "text"), ({"text": "x", "language": "en"}, "language")],
)
def test_malformed_requests_get_a_422_naming_the_field(suite, body, field):
    response = httpx.post(f"{suite}/medical/ner", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 422
    assert message(response).startswith(field)


def test_the_api_key_is_required_except_for_health(suite):
    assert httpx.post(f"{suite}/medical/ner", json={"text": "x"}, timeout=30).status_code == 401
    health = httpx.get(f"{suite}/medical/health", timeout=30).json()
    assert health["status"] == "ok" and health["labels"] == ["Disease"]


def test_a_newly_published_adapter_is_served_at_the_next_request(
    suite, medical_settings, ner_adapter, tmp_path
):
    registry = AdapterRegistry(medical_settings.registry)
    copy = tmp_path / "published"
    shutil.copytree(ner_adapter, copy)
    (copy / "metrics.json").write_text("{}")
    info = registry.add("medical", copy, overwrite=True)
    try:
        served = ner(suite, TEXT).json()["adapter"]
        assert served == {"name": "medical", "version": info.version}
    finally:
        registry.delete("medical")
    assert ner(suite, TEXT).json()["adapter"]["version"] == content_hash(ner_adapter)


def test_the_federation_route_lists_runs_and_rounds(suite, medical_settings):
    assert httpx.get(f"{suite}/medical/federation", headers=AUTH, timeout=30).json()["rounds"] == []
    store = RoundStore(medical_settings.rounds_database)
    run_id = store.start_run(adapter="medical", strategy="fedavg", settings={}, rounds=2)
    store.add_round(
        run_id,
        RoundRecord(round=1, sites=["north", "south"], examples=10, bytes_down=8, bytes_up=4, seconds=1.5),
    )
    store.close()
    body = httpx.get(f"{suite}/medical/federation", headers=AUTH, timeout=30).json()
    assert body["run"]["id"] == run_id and body["rounds"][0]["sites"] == ["north", "south"]
    assert (
        httpx.get(f"{suite}/medical/federation?run_id={run_id}", headers=AUTH, timeout=30).status_code == 200
    )
    missing = httpx.get(f"{suite}/medical/federation?run_id=999", headers=AUTH, timeout=30)
    assert missing.status_code == 404 and "999" in message(missing)
