"""A simulated live day for the fraud desk: the store seeded with what a scorer has seen before the
day, then the day's transactions posted to the scoring API in time order, at a given rate.

    verticals finance replay --day 2018-08-08 --seed-only            # seed the store (no API needed)
    verticals serve                                                  # then start the API ...
    verticals finance replay --api http://127.0.0.1:8000 --day 2018-08-08 --rate 20   # ... and replay
    verticals finance replay --api URL --day 2018-08-08 --limit 200 --rate 0   # 200, as fast as it goes

    frame = load_window(day)                                   # the data around `day`, with features
    report = seed(store, frame, day=day, model_dir="runs/finance/model")
    replay(api=url, transactions=day_transactions(frame, day), rate=20)

Seeding stores, straight into SQL (no HTTP), the SEED_DAYS days before `day` (what the scorer
reads: a card's last 30 days, a terminal's last 30 before the 7-day label delay) with the
handbook features each had, and each one's fraud label as an "import" arriving DELAY_DAYS after
the transaction. The SCORED_DAYS days just before `day` are also scored offline with the model,
so the dashboard has a week of labelled, scored days (AUC/AP/CP@100) before the replayed one; their
reasons are not recorded. Seeding is idempotent: transactions already stored are left as they are.

NOTE: seed before the API starts: a scoring service may read its recent history into memory when
it starts, and would not see rows written behind its back.

The replayed day gets no labels (its chargebacks would arrive a week later); analysts label its
alerts from the dashboard. This module does not start the API (`verticals serve`, `make run`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, fields
from datetime import UTC, date, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from core_model.datasets import dataset_dir

from .features import DELAY_DAYS, FEATURES, with_features
from .model import WEIGHTS, load_fraud_model
from .scoring import TERMINAL_DAYS, model_inputs
from .store import TransactionStore
from .training import Examples, predict
from .transactions import DATASET, FILE, read_transactions

log = logging.getLogger(__name__)
SEED_DAYS = TERMINAL_DAYS  # 37: the furthest back a transaction's features and series read
SCORED_DAYS = DELAY_DAYS  # scored offline at seeding: the daily charts' labelled history
ONE_DAY = pd.Timedelta(days=1)
DERIVED = [name for name in FEATURES if name != "amount"]  # the features a stored row keeps


def load_window(day: date, *, seed: bool = True, path: str | Path | None = None) -> pd.DataFrame:
    """The transactions of `day`, time-ordered, and with `seed` those of the SEED_DAYS days
    before it too, with their FEATURES computed from SEED_DAYS more days before (so that the
    first seeded day's windows are full)."""
    path = Path(path) if path is not None else dataset_dir(DATASET) / FILE
    frame = read_transactions(path)
    midnight = pd.Timestamp(day)
    if not seed:
        return frame[(frame["timestamp"] >= midnight) & (frame["timestamp"] < midnight + ONE_DAY)]
    frame = frame[
        (frame["timestamp"] >= midnight - 2 * SEED_DAYS * ONE_DAY) & (frame["timestamp"] < midnight + ONE_DAY)
    ]
    frame = with_features(frame)
    return frame[frame["timestamp"] >= midnight - SEED_DAYS * ONE_DAY].reset_index(drop=True)


@dataclass(frozen=True)
class SeedReport:
    stored: int  # transactions stored now (0: all were there already)
    scored: int  # of them scored offline
    seconds: float


def seed(
    store: TransactionStore, frame: pd.DataFrame, *, day: date, model_dir: str | Path | None
) -> SeedReport:
    """Stores the transactions of `frame` before `day` with their features and their "import"
    labels (arriving DELAY_DAYS after each); those of the SCORED_DAYS days before `day` also with
    the score the model at `model_dir` gives them (no model: unscored). Rows already stored stay."""
    started = time.perf_counter()
    history = frame[frame["timestamp"] < pd.Timestamp(day)].reset_index(drop=True)
    new = history[
        ~history["transaction_id"].astype(str).isin(store.existing(history["transaction_id"].astype(str)))
    ]
    scores = pd.Series(np.nan, index=history.index)
    version = None
    if model_dir is not None and len(new):
        scores, version = offline_scores(
            history, model_dir=model_dir, since=pd.Timestamp(day) - pd.Timedelta(days=SCORED_DAYS)
        )
    scored = scores[new.index].notna().to_numpy()
    features = new[DERIVED].astype(float).to_dict("records")
    rows = [
        {**body, "features": values, "score": float(score) if known else None,
         "model_version": version if known else None}
        for body, values, score, known in zip(
            _bodies(new), features, scores[new.index], scored, strict=True
        )
    ]  # fmt: skip
    labels = [
        {"transaction_id": row["transaction_id"], "fraud": int(fraud), "source": "import",
         "arrived_at": row["timestamp"] + timedelta(days=DELAY_DAYS)}
        for row, fraud in zip(rows, new["fraud"], strict=True)
    ]  # fmt: skip
    stored = store.import_history(rows, labels)
    return SeedReport(
        stored=stored, scored=int(scored.sum()), seconds=round(time.perf_counter() - started, 1)
    )


def offline_scores(
    history: pd.DataFrame, *, model_dir: str | Path, since: pd.Timestamp
) -> tuple[pd.Series, str]:
    """The model's scores of the rows of `history` from `since` on (NaN before), each read with
    its card's earlier rows of `history`, and the model's version (as the service names it)."""
    model, _ = load_fraud_model(model_dir)
    version = hashlib.sha256((Path(model_dir) / WEIGHTS).read_bytes()).hexdigest()[:12]
    _, examples = model_inputs(model, history)
    rows = np.flatnonzero((history["timestamp"] >= since).to_numpy())
    chosen = Examples(*(getattr(examples, field.name)[rows] for field in fields(Examples)))
    scores = np.full(len(history), np.nan)
    scores[rows] = predict(model, chosen)
    return pd.Series(scores, index=history.index), version


def seeded(store: TransactionStore, *, day: date) -> bool:
    """Whether every one of the SEED_DAYS days before `day` has stored transactions, and the
    SCORED_DAYS last of them scores."""
    days = store.days().set_index("day")
    wanted = [day - timedelta(days=n) for n in range(1, SEED_DAYS + 1)]
    if not all(d in days.index for d in wanted):
        return False
    return all(days.at[d, "scored"] > 0 for d in wanted[:SCORED_DAYS])


def day_transactions(frame: pd.DataFrame, day: date) -> list[dict]:
    """`day`'s transactions of `frame` as POST /finance/score bodies, in time order."""
    midnight = pd.Timestamp(day)
    rows = frame[(frame["timestamp"] >= midnight) & (frame["timestamp"] < midnight + ONE_DAY)]
    return [{**body, "timestamp": body["timestamp"].isoformat()} for body in _bodies(rows)]


def _bodies(frame: pd.DataFrame) -> list[dict]:
    """The transactions of `frame` as the store and the API take them (ids as strings, aware UTC)."""
    stamps = frame["timestamp"].dt.tz_localize(UTC).dt.to_pydatetime()
    return [
        {"transaction_id": str(t), "customer_id": str(c), "terminal_id": str(m), "amount": float(a),
         "timestamp": stamp}
        for t, c, m, a, stamp in zip(
            frame["transaction_id"], frame["customer_id"], frame["terminal_id"], frame["amount"], stamps,
            strict=True,
        )
    ]  # fmt: skip


@dataclass(frozen=True)
class ReplayReport:
    posted: int
    alerts: int
    skipped: int  # scored before (a replay resumed)
    seconds: float


class ReplayError(RuntimeError):
    """The API is not there, has no model, or refused a transaction; the message says which."""


def wait_for_api(api: str, *, api_key: str | None = None, timeout_s: float) -> None:
    """Returns once /finance/health says a model is served; a ReplayError after `timeout_s`, or
    at once when the API answers that it has no model."""
    api, headers = api.rstrip("/"), {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = httpx.get(f"{api}/finance/health", headers=headers, timeout=5)
            if answer.status_code == 200 and answer.json().get("status") == "ok":
                return
            if answer.status_code == 200:
                raise ReplayError(f"{api} has no fraud model: {answer.json().get('detail')}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ReplayError(
                f"no finance API at {api} after {timeout_s:.0f} s (start it with `verticals serve`)"
            )
        time.sleep(1)


def replay(
    *,
    api: str,
    transactions: list[dict],
    rate: float,
    api_key: str | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Posts `transactions` to POST /finance/score one at a time, `rate` per second at most (0:
    as fast as the API answers). A transaction scored before (409) is skipped, so a replay can
    be resumed; any other refusal stops it with a ReplayError."""
    api = api.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = next_at = time.perf_counter()
    posted = alerts = skipped = 0
    bar = tqdm(total=len(transactions), desc="replay", unit="tx", disable=not progress, mininterval=2)
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        for body in transactions:
            if (wait := next_at - time.perf_counter()) > 0:
                time.sleep(wait)
            answer = client.post("/finance/score", json=body)
            if answer.status_code == 409:  # scored before: no time spent on it
                skipped += 1
            elif answer.is_error:
                raise ReplayError(f"{body['transaction_id']}: HTTP {answer.status_code}: {answer.text[:300]}")
            else:
                posted += 1
                alerts += answer.json()["decision"] == "alert"
                next_at = max(next_at + (1 / rate if rate > 0 else 0), time.perf_counter() - 1)
            bar.update()
            bar.set_postfix(alerts=alerts, refresh=False)
    bar.close()
    return ReplayReport(
        posted=posted, alerts=alerts, skipped=skipped, seconds=round(time.perf_counter() - started, 1)
    )
