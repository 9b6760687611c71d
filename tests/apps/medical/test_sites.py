"""Site folders: a corpus cut into even or skewed shares of whole documents, written and read back
as a SuperNode reads them, and summarised by counts only; the Flower app's run config kept equal
to the Python defaults."""

import tomllib

import pytest

from apps.medical.commands import APP_DIR
from apps.medical.federation import MEDICAL_TASK, SERVER_SETTINGS
from apps.medical.sites import load_site, split_corpus, summarize, write_site
from core_model.train.metrics import bio_spans

from .conftest import ncbi

SITES = ["north", "south", "east"]


def density(share):
    return sum(len(bio_spans(s["tags"])) for s in share) / len(share)


def test_an_even_split_gives_every_site_the_same_size_and_label_mix():
    corpus = ncbi("train", 600)
    shares = split_corpus(corpus, SITES, mode="even")
    sizes = [len(shares[s]["train"]) + len(shares[s]["dev"]) for s in SITES]
    assert sum(sizes) == len(corpus) and max(sizes) - min(sizes) <= 10
    assert all(len(shares[s]["dev"]) > 0 for s in SITES)
    densities = [density(shares[s]["train"]) for s in SITES]
    assert max(densities) - min(densities) < 0.35


def test_a_skewed_split_differs_in_size_and_in_label_mix():
    corpus = ncbi("train", 600)
    shares = split_corpus(corpus, SITES, mode="skewed")
    sizes = [len(shares[s]["train"]) + len(shares[s]["dev"]) for s in SITES]
    assert sum(sizes) == len(corpus) and sizes[0] > sizes[1] > sizes[2]
    densities = [density(shares[s]["train"] + shares[s]["dev"]) for s in SITES]
    assert densities[0] > densities[1] > densities[2]


def test_a_site_folder_is_read_back_as_written(tmp_path):
    share = split_corpus(ncbi("train", 50), ["north"])["north"]
    write_site(tmp_path / "north", share)
    site = load_site({"site": "north", "data": str(tmp_path / "north")})
    assert (site.name, site.train, site.evaluation) == ("north", share["train"], share["dev"])
    assert summarize(site.train)["sentences"] == len(share["train"])
    assert set(summarize(site.train)) == {"sentences", "words", "entities"}


def test_a_site_without_records_is_refused_by_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no training records in {tmp_path}"):
        load_site({"data": str(tmp_path)})
    with pytest.raises(ValueError, match='no "data"'):
        load_site({"site": "north"})


def test_the_flower_app_run_config_matches_the_python_defaults():
    config = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    expected = {**MEDICAL_TASK.to_config()}
    expected.update({k.replace("_", "-"): v for k, v in SERVER_SETTINGS.__dict__.items()})
    expected = {k: ",".join(v) if isinstance(v, list) else v for k, v in expected.items()}
    assert config == expected
