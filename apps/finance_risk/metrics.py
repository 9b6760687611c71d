"""How a fraud scorer is judged (the Fraud Detection Handbook's chapter 4): AUC ROC and average
precision over transactions, and card precision@k, the share of compromised cards among the k
cards an investigator can check each day, averaged over days (cards found on one day are blocked
and not counted again).

    report = fraud_metrics(test, scores, k=100)     # {"auc", "ap", "cp_at_k", "days"}
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_at_k(frame: pd.DataFrame, scores: np.ndarray, *, k: int = 100) -> list[float]:
    """Per day, in order: the k customers with the highest score of the day (a card scores its
    riskiest transaction), and the share of them with a fraud that day. A compromised card found
    in an earlier day's top k is blocked: it is not counted again (the handbook's definition)."""
    cards = pd.DataFrame(
        {"day": frame["day"].to_numpy(), "customer_id": frame["customer_id"].to_numpy(),
         "fraud": frame["fraud"].to_numpy(), "score": scores}
    ).groupby(["day", "customer_id"]).max()  # fmt: skip
    out, blocked = [], set()
    for _, day in cards.groupby(level="day", sort=True):
        day = day.droplevel("day")
        top = day[~day.index.isin(blocked)].nlargest(k, "score")
        out.append(float(top["fraud"].sum()) / k)
        blocked.update(top.index[top["fraud"] == 1])
    return out


def fraud_metrics(frame: pd.DataFrame, scores: np.ndarray, *, k: int = 100) -> dict[str, float]:
    labels = frame["fraud"].to_numpy()
    if labels.min() == labels.max():
        raise ValueError("fraud metrics need both frauds and genuine transactions in the frame")
    daily = card_precision_at_k(frame, scores, k=k)
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "ap": float(average_precision_score(labels, scores)),
        "cp_at_k": float(np.mean(daily)),
        "days": len(daily),
    }
