"""The adapter registry: add, list, version, load, delete, and clear errors for bad names.

.venv/bin/python -m pytest tests/core_model/train/test_registry.py -q
"""

import dataclasses
import string

import pytest
import torch

from core_model import load_model, train_tokenizer
from core_model.engine.lora import read_adapter
from core_model.train.adapters import AdapterTrainingConfig, train_adapter
from core_model.train.registry import AdapterRegistry, content_hash

TEXTS = [line for line in string.__doc__.splitlines() if line.strip()]
CONFIG = AdapterTrainingConfig(rank=2, targets=("o_proj",), epochs=1, batch_size=4)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS * 3, vocab_size=300)


def trained(tokenizer, out_dir, *, task="lm", seed=0):
    if task == "lm":
        examples = [{"text": t} for t in TEXTS]
    else:
        examples = [{"text": t, "label": "long" if len(t) > 40 else "short"} for t in TEXTS]
    config = dataclasses.replace(CONFIG, seed=seed)
    return train_adapter(
        load_model("tiny"), tokenizer, task=task, train=examples[:8], dev=examples[8:],
        out_dir=out_dir, config=config, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lm_dir(tokenizer, tmp_path_factory):
    return trained(tokenizer, tmp_path_factory.mktemp("lm")).path


def test_add_then_list_path_and_version(lm_dir, tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    info = registry.add("support-reply", lm_dir)
    (registry.root / "notes").mkdir()  # not an adapter: not listed
    assert [i.name for i in registry.list()] == ["support-reply"]
    assert info.task == "lm" and "loss" in info.metrics and info.created.tzinfo is not None
    assert registry.path("support-reply") == registry.root / "support-reply"
    engine_hash = read_adapter("x", registry.path("support-reply"), model=load_model("tiny")).content_hash
    assert registry.version("support-reply") == info.version == content_hash(lm_dir) == engine_hash


def test_add_refuses_to_overwrite_unless_asked(lm_dir, tokenizer, tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    first = registry.add("reply", lm_dir).version
    other = trained(tokenizer, tmp_path / "other", seed=1).path
    with pytest.raises(FileExistsError, match="'reply' already exists.*overwrite=True"):
        registry.add("reply", other)
    assert registry.version("reply") == first
    assert registry.add("reply", other, overwrite=True).version == content_hash(other) != first
    assert [p.name for p in registry.root.iterdir()] == ["reply"]  # no staging directory left behind


def test_load_gives_the_trained_classifier(tokenizer, tmp_path):
    result = trained(tokenizer, tmp_path / "run", task="sequence-classification")
    registry = AdapterRegistry(tmp_path / "adapters")
    registry.add("length", result.path)
    assert registry.list()[0].task == "sequence-classification"
    model = registry.load("length", load_model("tiny"), tokenizer=tokenizer)
    ids = torch.tensor([tokenizer.encode(TEXTS[0], add_bos=True)])
    with torch.no_grad():
        assert torch.equal(model(ids), result.model(ids))
    assert model.classify(TEXTS[:2])[0][0] in {"long", "short"}


def test_delete_and_unknown_names(lm_dir, tmp_path):
    registry = AdapterRegistry(tmp_path)
    registry.add("a", lm_dir)
    registry.add("b", lm_dir)
    registry.delete("a")
    with pytest.raises(FileNotFoundError, match="no adapter named 'a'.*known adapters: b"):
        registry.path("a")
    with pytest.raises(FileNotFoundError, match="no adapter named 'a'"):
        registry.delete("a")


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "base:lora", ".hidden", "a\\b"])
def test_bad_names_are_refused(lm_dir, tmp_path, name):
    with pytest.raises(ValueError, match="invalid adapter name.*no path separators, no ':'"):
        AdapterRegistry(tmp_path).add(name, lm_dir)


def test_adding_a_directory_without_adapter_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an adapter directory: it has no adapter_config.json"):
        AdapterRegistry(tmp_path / "adapters").add("x", tmp_path)
