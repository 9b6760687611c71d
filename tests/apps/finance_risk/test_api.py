"""The finance API on a real uvicorn on loopback, with a tiny fraud model saved to disk and the
transactions in a SQLite file: scores grow a card's history, a request's threshold decides, bad
input is a 4xx that names what is wrong and stores nothing, labels keep their arrival time, a
scorer process that dies costs one pass and its successor reads the history back from the store.

.venv/bin/python -m pytest tests/apps/finance_risk/test_api.py -q
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler, save_fraud_model
from apps.finance_risk.service import FinanceService
from apps.finance_risk.settings import FinanceSettings
from apps.finance_risk.store import TransactionStore
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.loopback import serving

API_KEY = "test-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> FinanceSettings:
    root = tmp_path_factory.mktemp("finance")
    rng = np.random.default_rng(0)
    scaler = Scaler.fit(rng.random((100, len(FEATURES))) * 100)
    save_fraud_model(FraudModel(FraudModelConfig.preset("tiny"), scaler=scaler), root / "model", metrics={})
    return FinanceSettings(
        database=f"sqlite:///{root / 'finance.db'}", model=str(root / "model"), max_batch=5
    )


@pytest.fixture(scope="module")
def url(checkpoint, settings) -> Iterator[str]:
    app = create_app(ServeSettings(model=str(checkpoint), api_key=API_KEY), finance=settings)
    with serving(app) as url:
        yield url


def transaction(n: int, *, customer: str = "c1", terminal: str = "m1", hour: int = 8, **overrides) -> dict:
    body = {
        "transaction_id": f"t{n}", "customer_id": customer, "terminal_id": terminal,
        "amount": 20.0 + n, "timestamp": f"2018-09-01T{hour:02d}:{n % 60:02d}:00Z",
    }  # fmt: skip
    return {**body, **overrides}


def post(url: str, path: str, body: dict, **params) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=HEADERS, params=params, timeout=30)


def test_scores_grow_a_card_history_and_the_request_threshold_decides(url):
    first = post(url, "/finance/score", transaction(1)).json()
    assert first["cold_start"] is True and first["history"] == 0
    assert 0.0 <= first["score"] <= 1.0 and first["model_version"]
    second = post(url, "/finance/score", transaction(2), threshold=0.0).json()
    assert second["cold_start"] is False and second["history"] == 1
    assert second["decision"] == "alert" and second["threshold"] == 0.0
    assert post(url, "/finance/score", transaction(3), threshold=1.0).json()["decision"] == "pass"
    for reason in second["reasons"]:
        assert reason["feature"] in FEATURES and reason["contribution"] > 0
    assert [e["transaction_id"] for e in second["events"]] == ["t1"]  # the one earlier event it read
    assert 0 < second["events"][0]["weight"] < 1


def test_concurrent_requests_share_passes_and_one_id_is_scored_once(url):
    bodies = [transaction(70 + i, customer=f"c7{i}") for i in range(8)] + [
        transaction(70, customer="c70")
    ] * 3
    with ThreadPoolExecutor(len(bodies)) as pool:
        codes = list(pool.map(lambda body: post(url, "/finance/score", body).status_code, bodies))
    assert codes.count(200) == 8 and codes.count(409) == 3


def test_a_batch_is_scored_in_time_order(url):
    later, earlier = transaction(11, customer="c2", hour=10), transaction(12, customer="c2", hour=9)
    scores = post(url, "/finance/score/batch", {"transactions": [later, earlier]}).json()["scores"]
    assert [s["transaction_id"] for s in scores] == ["t12", "t11"]
    assert [s["history"] for s in scores] == [0, 1]


@pytest.mark.parametrize(
    ("change", "field"),
    [({"amount": "12,50"}, "amount"), ({"amount": -3}, "amount"), ({"customer_id": ""}, "customer_id"),
     ({"timestamp": "2018-09-01 08:00"}, "timestamp"), ({"timestamp": "yesterday"}, "timestamp")],
)  # fmt: skip
def test_a_malformed_field_is_a_422_that_names_it_and_stores_nothing(url, settings, change, field):
    response = post(url, "/finance/score", transaction(21, **change))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ")
    store = TransactionStore(settings.database)
    assert not store.existing(["t21"])
    store.close()


def test_the_openapi_schema_documents_the_score_body_and_answer(url):
    operation = httpx.get(f"{url}/openapi.json").json()["paths"]["/finance/score"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"transaction_id", "customer_id", "terminal_id", "amount", "timestamp"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ScoreOut"
    )
    assert [parameter["name"] for parameter in operation["parameters"]] == ["threshold"]


def test_a_body_that_is_not_json_is_a_422_that_says_so(url):
    response = httpx.post(f"{url}/finance/score", content=b'{"amount": ', headers=HEADERS, timeout=30)
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]["message"]


def test_conflicts_limits_and_keys(url, settings):
    post(url, "/finance/score", transaction(31, customer="c3"))
    again = post(url, "/finance/score", transaction(31, customer="c3"))
    assert again.status_code == 409 and "already scored" in again.json()["error"]["message"]
    with_a_repeat = {"transactions": [transaction(32, customer="c3"), transaction(31, customer="c3")]}
    assert post(url, "/finance/score/batch", with_a_repeat).status_code == 409
    store = TransactionStore(settings.database)
    assert store.existing(["t31", "t32"]) == {"t31"}  # nothing of the refused batch was scored
    store.close()
    too_many = {"transactions": [transaction(40 + i, customer="c4") for i in range(6)]}
    assert post(url, "/finance/score/batch", too_many).status_code == 413
    assert httpx.post(f"{url}/finance/score", json=transaction(50)).status_code == 401
    assert httpx.get(f"{url}/finance/health").json()["status"] == "ok"


def test_labels_are_stored_with_their_arrival_and_unknown_ids_are_refused(url, settings):
    assert post(url, "/finance/score", transaction(61, customer="c6")).status_code == 200
    label = {
        "transaction_id": "t61",
        "fraud": True,
        "source": "chargeback",
        "arrived_at": "2018-09-05T00:00:00Z",
    }
    stored = post(url, "/finance/labels", {"labels": [label]})
    assert stored.json() == {"stored": 1}
    refused = post(url, "/finance/labels", {"labels": [
        {"transaction_id": "t61", "fraud": False}, {"transaction_id": "nope", "fraud": True},
    ]})  # fmt: skip
    assert refused.status_code == 404 and "nope" in refused.json()["error"]["message"]
    store = TransactionStore(settings.database)
    day = datetime(2018, 9, 1, tzinfo=UTC)
    known = store.transactions(since=day, labels_known_at=datetime(2018, 9, 6, tzinfo=UTC))
    early = store.transactions(since=day, labels_known_at=datetime(2018, 9, 4, tzinfo=UTC))
    store.close()
    assert known.set_index("transaction_id").loc["t61", "fraud"] == 1  # the refused batch stored nothing
    assert early.set_index("transaction_id").loc["t61", "fraud"] == 0


def test_without_a_model_scoring_says_how_to_make_one(checkpoint, tmp_path):
    settings = FinanceSettings(database=f"sqlite:///{tmp_path / 'f.db'}", model=str(tmp_path / "none"))
    app = create_app(ServeSettings(model=str(checkpoint)), finance=settings)
    with serving(app) as base:
        response = httpx.post(f"{base}/finance/score", json=transaction(1), timeout=30)
        assert (
            response.status_code == 503 and "verticals finance train" in response.json()["error"]["message"]
        )
        assert httpx.get(f"{base}/finance/health").json()["status"] == "no model"


def test_a_model_replaced_on_disk_serves_from_the_next_request(checkpoint, tmp_path):
    model_dir = tmp_path / "model"
    scaler = Scaler.fit(np.random.default_rng(0).random((100, len(FEATURES))) * 100)
    save_fraud_model(FraudModel(FraudModelConfig.preset("tiny"), scaler=scaler), model_dir, metrics={})
    settings = FinanceSettings(database=f"sqlite:///{tmp_path / 'f.db'}", model=str(model_dir))
    app = create_app(ServeSettings(model=str(checkpoint), api_key=API_KEY), finance=settings)
    with serving(app) as base:
        before = post(base, "/finance/score", transaction(1)).json()["model_version"]
        torch.manual_seed(1)
        save_fraud_model(FraudModel(FraudModelConfig.preset("tiny"), scaler=scaler), model_dir, metrics={})
        after = post(base, "/finance/score", transaction(2)).json()
    assert after["model_version"] != before and after["history"] == 1  # the history stays


def scorer_processes() -> set[int]:
    """The pids of this process's children that run a finance scorer."""
    found = set()
    for process in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (process / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent == os.getpid() and b"finance-scorer" in command:
            found.add(int(process.name))
    return found


def test_a_scorer_that_dies_fails_what_it_held_and_the_next_one_reloads_the_history(checkpoint, tmp_path):
    model_dir = tmp_path / "model"
    scaler = Scaler.fit(np.random.default_rng(0).random((100, len(FEATURES))) * 100)
    save_fraud_model(FraudModel(FraudModelConfig.preset("tiny"), scaler=scaler), model_dir, metrics={})
    settings = FinanceSettings(database=f"sqlite:///{tmp_path / 'f.db'}", model=str(model_dir))
    earlier = scorer_processes()
    app = create_app(ServeSettings(model=str(checkpoint), api_key=API_KEY), finance=settings)
    (scorer,) = scorer_processes() - earlier
    with serving(app) as base:
        assert post(base, "/finance/score", transaction(1)).status_code == 200
        os.kill(scorer, signal.SIGSTOP)  # the scorer holds the next request ...
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(post, base, "/finance/score", transaction(2))
            time.sleep(1.0)
            os.kill(scorer, signal.SIGKILL)  # ... when it dies
            died = held.result()
        assert died.status_code == 503 and "finance-scorer" in died.json()["error"]["message"]
        again = post(base, "/finance/score", transaction(2)).json()
        assert again["history"] == 1  # the new scorer read t1 back from the store
        assert [e["transaction_id"] for e in again["events"]] == ["t1"]


def test_an_in_memory_database_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="in memory, the scorer's process cannot open it"):
        FinanceService.start(FinanceSettings(database="sqlite://"))
