"""The suite's app with the medical router on a real uvicorn on loopback: the tiny checkpoint, an
entity-recognition adapter trained on a slice of NCBI-disease, a registry and a rounds database
in a temporary folder; and the site page (`ui.py`) pointed at it, in a subprocess.

.venv/bin/python -m pytest tests/apps/medical -q
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.medical.settings import MedicalSettings
from apps.suite import create_app
from core_model import load_tokenizer
from core_model.datasets import dataset_dir
from core_model.serve import ServeSettings
from core_model.tagging import read_tagged
from core_model.train.adapters import AdapterTrainingConfig, train_adapter
from tests.loopback import ROOT, serving, streamlit_page

API_KEY = "test-key"
UI_SCRIPT = ROOT / "apps" / "medical" / "ui.py"


def ncbi(split: str, count: int) -> list[dict]:
    return read_tagged(dataset_dir("ncbi_disease") / f"{split}.tsv")[:count]


@pytest.fixture(scope="session")
def ner_adapter(checkpoint, tmp_path_factory) -> Path:
    """A bidirectional disease tagger that reads spellings and learns tag transitions (CRF), as the
    federation's, on the tiny checkpoint (a few seconds of training)."""
    out = tmp_path_factory.mktemp("ner_adapter")
    config = AdapterTrainingConfig(
        rank=2, bidirectional=True, characters=8, crf=True, epochs=2, batch_size=8, lr=1e-2, max_length=64
    )
    tokenizer = load_tokenizer(str(checkpoint))
    train, dev = ncbi("train", 48), ncbi("devel", 8)
    task = "token-classification"
    train_adapter(
        str(checkpoint),
        tokenizer,
        task=task,
        train=train,
        dev=dev,
        out_dir=out,
        config=config,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def medical_settings(tmp_path_factory, ner_adapter) -> MedicalSettings:
    root = tmp_path_factory.mktemp("medical")
    return MedicalSettings(
        registry=str(root / "registry"), fallback_adapter=str(ner_adapter),
        rounds_database=f"sqlite:///{root / 'rounds.db'}",
    )  # fmt: skip


@pytest.fixture(scope="session")
def suite(checkpoint, medical_settings) -> Iterator[str]:
    app = create_app(ServeSettings(model=str(checkpoint), api_key=API_KEY), medical=medical_settings)
    with serving(app) as url:
        yield url


@pytest.fixture(scope="session")
def ui_url(suite, tmp_path_factory) -> Iterator[str]:
    """The site page (`streamlit run ui.py -- --api SUITE --api-key KEY --data SITE`) on a free port."""
    from apps.medical.sites import split_corpus, write_site

    site = write_site(
        tmp_path_factory.mktemp("site") / "north", split_corpus(ncbi("train", 40), ["north"])["north"]
    )
    args = ["--api", suite, "--api-key", API_KEY, "--data", str(site)]
    with streamlit_page(UI_SCRIPT, args=args, log=tmp_path_factory.mktemp("ui") / "ui.log") as url:
        yield url
