"""The peers our fraud model must beat, trained on the same features and rows: logistic regression
(standardised features) and gradient-boosted trees (scikit-learn's histogram GBDT, the LightGBM
algorithm). Each is tuned on a validation split by the handbook's protocol, never on the test.

    model = fit_baseline("boosted_trees", X_train, y_train, X_valid=X_v, y_valid=y_v)
    scores = model.predict_proba(X_test)[:, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BASELINES = ("logistic_regression", "boosted_trees")
# the grids each baseline is tuned over (average precision on the validation split)
GRIDS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
    "boosted_trees": [
        {"max_depth": depth, "learning_rate": lr, "max_iter": 200} for depth in (3, 6) for lr in (0.05, 0.1)
    ],
}


def build_baseline(name: str, **params: Any):
    if name == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **params))
    if name == "boosted_trees":
        return HistGradientBoostingClassifier(random_state=0, early_stopping=False, **params)
    raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")


def fit_baseline(
    name: str,
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    X_refit: np.ndarray | None = None,
    y_refit: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The baseline with the grid's best validation AP, refitted on (X_refit, y_refit) when given
    (the training split of the test protocol), and its chosen parameters."""
    best: tuple[float, dict[str, Any]] = (-1.0, {})
    for params in GRIDS[name]:
        model = build_baseline(name, **params).fit(X_train, y_train)
        ap = float(average_precision_score(y_valid, model.predict_proba(X_valid)[:, 1]))
        best = max(best, (ap, params), key=lambda pair: pair[0])
    params = best[1]
    if X_refit is None:
        X_refit, y_refit = X_train, y_train
    model = build_baseline(name, **params).fit(X_refit, y_refit)
    return model, {**params, "validation_ap": round(best[0], 4)}
