"""The fraud desk's read endpoints on a hand-made day stored with its scores and labels: the alert
queue ranks cards by their riskiest transaction and keeps k, the daily stats compute AUC/AP/CP@k
on the labelled transactions (null without both classes), the histogram counts the day's scores,
and a malformed day, k or period is a 422 that says so.

.venv/bin/python -m pytest -q tests/apps/finance_risk/test_monitoring.py
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from apps.finance_risk.monitoring import daily_stats
from apps.finance_risk.store import TransactionStore
from tests.apps.finance_risk.conftest import DESK_HEADERS

DAY, QUIET_DAY = "2018-08-01", "2018-08-02"
# (id, card, hour, score, label): cards a..d scored, e not; card a's riskiest is a1, card c's is c2
HAND_MADE = [
    ("a1", "a", 10, 0.92, 1), ("a2", "a", 11, 0.20, None), ("b1", "b", 9, 0.85, 0),
    ("c1", "c", 8, 0.30, 0), ("c2", "c", 12, 0.82, 1), ("d1", "d", 7, 0.10, 0), ("e1", "e", 6, None, None),
]  # fmt: skip
QUIET = [("x1", "x", 10, 0.70, 0), ("x2", "y", 11, 0.20, None)]  # labelled genuine only


def at(day: str, hour: int) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def hand_made(desk_url, desk_settings) -> None:
    store = TransactionStore(desk_settings.database)
    for day, rows in ((DAY, HAND_MADE), (QUIET_DAY, QUIET)):
        store.add_transactions(
            {"transaction_id": tid, "customer_id": card, "terminal_id": "m1", "amount": 10.0,
             "timestamp": at(day, hour), "score": score,
             "reasons": {"features": [{"feature": "amount", "value": 10.0, "contribution": 0.1}]}}
            for tid, card, hour, score, _ in rows
        )  # fmt: skip
        store.add_labels(
            {"transaction_id": tid, "fraud": label, "source": "import", "arrived_at": at("2018-08-09", 0)}
            for tid, _, _, _, label in rows
            if label is not None
        )
    store.close()


def get(url: str, path: str, **params) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, headers=DESK_HEADERS, timeout=30)


def test_the_queue_ranks_cards_by_their_riskiest_transaction_and_keeps_k(desk_url, hand_made):
    queue = get(desk_url, "/finance/alerts", day=DAY, threshold=0.86).json()
    assert queue["scored"] == 6 and queue["threshold"] == 0.86
    assert [card["customer_id"] for card in queue["cards"]] == ["a", "b", "c", "d"]  # e was never scored
    assert [card["rank"] for card in queue["cards"]] == [1, 2, 3, 4]
    assert [card["alert"] for card in queue["cards"]] == [True, False, False, False]
    first = queue["cards"][0]["transactions"]
    assert [t["transaction_id"] for t in first] == ["a1", "a2"]  # riskiest first
    assert first[0]["label"]["fraud"] is True and first[0]["label"]["source"] == "import"
    assert first[1]["label"] is None and first[0]["reasons"]["features"][0]["feature"] == "amount"
    top_two = get(desk_url, "/finance/alerts", day=DAY, k=2).json()["cards"]
    assert [card["customer_id"] for card in top_two] == ["a", "b"]


def test_daily_stats_on_a_hand_made_labelled_day(desk_url, hand_made):
    answer = get(desk_url, "/finance/daily", start=DAY, end=QUIET_DAY, threshold=0.5, k=2).json()
    day, quiet = answer["days"]
    labelled = [
        (score, label) for _, _, _, score, label in HAND_MADE if score is not None and label is not None
    ]
    scores, labels = [s for s, _ in labelled], [y for _, y in labelled]
    assert (day["day"], day["transactions"], day["scored"], day["alerts"]) == (DAY, 7, 6, 3)
    assert day["alert_rate"] == pytest.approx(3 / 6) and day["labelled"] == 5 and day["frauds"] == 2
    assert day["fraud_rate"] == pytest.approx(2 / 5)
    assert day["auc"] == pytest.approx(roc_auc_score(labels, scores))  # 5/6
    assert day["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert day["cp_at_k"] == pytest.approx(0.5)  # the top 2 cards: a (fraud) and b (genuine)
    assert quiet["day"] == QUIET_DAY and quiet["alerts"] == 1 and quiet["fraud_rate"] == 0.0
    assert quiet["auc"] is None and quiet["ap"] is None and quiet["cp_at_k"] is None  # one class only


def test_days_and_the_distribution(desk_url, hand_made):
    days = {d["day"]: d for d in get(desk_url, "/finance/days").json()["days"]}
    assert days[DAY] == {"day": DAY, "transactions": 7, "scored": 6}
    histogram = get(desk_url, "/finance/distribution", day=DAY, bins=10).json()
    assert len(histogram["edges"]) == 11 and sum(histogram["counts"]) == 6
    assert histogram["fraud"] == [0] * 8 + [1, 1]  # c2 at 0.82, a1 at 0.92
    assert sum(histogram["genuine"]) == 3


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [("/finance/alerts", {"day": "2018-13-01"}, "day"), ("/finance/alerts", {}, "day"),
     ("/finance/alerts", {"day": DAY, "k": 0}, "k"), ("/finance/alerts", {"day": DAY, "k": 5000}, "k"),
     ("/finance/daily", {"start": QUIET_DAY, "end": DAY}, "after"),
     ("/finance/daily", {"start": "2017-01-01", "end": DAY}, "at most"),
     ("/finance/distribution", {"day": DAY, "bins": 1}, "bins")],
)  # fmt: skip
def test_a_bad_day_k_or_period_is_a_422_that_says_so(desk_url, path, params, says):
    response = get(desk_url, path, **params)
    assert response.status_code == 422 and says in response.json()["error"]["message"]


def test_the_desk_needs_the_api_key(desk_url):
    assert httpx.get(f"{desk_url}/finance/alerts", params={"day": DAY}).status_code == 401


def test_a_card_found_compromised_is_not_counted_again_the_next_day():
    rows = [  # card a is fraud on both days and the riskiest; k = 1
        (date(2018, 8, 1), "a", 0.9, 1), (date(2018, 8, 1), "b", 0.1, 0),
        (date(2018, 8, 2), "a", 0.9, 1), (date(2018, 8, 2), "b", 0.5, 0), (date(2018, 8, 2), "c", 0.1, 0),
    ]  # fmt: skip
    frame = pd.DataFrame({
        "timestamp": [pd.Timestamp(day, tz="UTC") for day, *_ in rows], "customer_id": [r[1] for r in rows],
        "score": [r[2] for r in rows], "fraud": [float(r[3]) for r in rows],
    })  # fmt: skip
    first, second = daily_stats(frame, threshold=0.5, k=1)
    assert first["cp_at_k"] == 1.0 and second["cp_at_k"] == 0.0  # day 2's top card is b: a is blocked
    assert second["alerts"] == 2 and second["labelled"] == 3
