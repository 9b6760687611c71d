"""The fraud desk under test: a tiny fraud model saved to disk, the suite's app with the finance
router on a real uvicorn on loopback (transactions in a SQLite file), and the dashboard
(`ui.py`) pointed at it in a subprocess. Session-scoped: the desk's tests share one API, each on
its own days, so none sees another's transactions.

.venv/bin/python -m pytest -q tests/apps/finance_risk/test_monitoring.py \\
    tests/apps/finance_risk/test_replay.py tests/apps/finance_risk/test_ui.py
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from apps.finance_risk.features import FEATURES
from apps.finance_risk.model import FraudModel, FraudModelConfig, Scaler, save_fraud_model
from apps.finance_risk.settings import FinanceSettings
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.loopback import ROOT, serving, streamlit_page

DESK_KEY = "desk-key"
DESK_HEADERS = {"Authorization": f"Bearer {DESK_KEY}"}
DESK_UI = ROOT / "apps" / "finance_risk" / "ui.py"


@pytest.fixture(scope="session")
def tiny_fraud_model(tmp_path_factory) -> Path:
    """An untrained tiny fraud model (its scores are arbitrary but in [0, 1])."""
    scaler = Scaler.fit(np.random.default_rng(0).random((100, len(FEATURES))) * 100)
    directory = tmp_path_factory.mktemp("fraud_model") / "model"
    save_fraud_model(FraudModel(FraudModelConfig.preset("tiny"), scaler=scaler), directory, metrics={})
    return directory


@pytest.fixture(scope="session")
def desk_settings(tmp_path_factory, tiny_fraud_model) -> FinanceSettings:
    database = tmp_path_factory.mktemp("desk") / "finance.db"
    return FinanceSettings(database=f"sqlite:///{database}", model=str(tiny_fraud_model))


@pytest.fixture(scope="session")
def desk_url(checkpoint, desk_settings) -> Iterator[str]:
    app = create_app(ServeSettings(model=str(checkpoint), api_key=DESK_KEY), finance=desk_settings)
    with serving(app) as url:
        yield url


@pytest.fixture(scope="session")
def desk_ui_url(desk_url, tmp_path_factory) -> Iterator[str]:
    """The dashboard (`streamlit run ui.py -- --api DESK --refresh 0`) on a free port."""
    args = ["--api", desk_url, "--api-key", DESK_KEY, "--refresh", "0"]
    with streamlit_page(DESK_UI, args=args, log=tmp_path_factory.mktemp("desk_ui") / "ui.log") as url:
        yield url
