"""The shipped embedded model: it loads from the repository alone and has learned Python."""

import json

import torch
import torch.nn.functional as F

from core_model import load_model, load_tokenizer
from core_model.checkpoint import ASSETS
from core_model.train.corpus import read_source, split_held_out, stdlib_files, stdlib_root


def test_the_embedded_model_ships_its_weights_and_card():
    directory = ASSETS / "embedded"
    size = sum(f.stat().st_size for f in directory.iterdir())
    assert size < 30e6, f"the embedded model takes {size / 1e6:.1f} MB; the budget is 30 MB"
    summary = json.loads((directory / "training_summary.json").read_text())
    assert summary["steps"] > 0 and "held-out" in (directory / "README.md").read_text().lower()


def test_the_embedded_model_predicts_held_out_python_far_better_than_unigrams():
    model, tokenizer = load_model("embedded", dtype=torch.float32), load_tokenizer("embedded")
    _, held_out = split_held_out(stdlib_files(), root=stdlib_root())
    ids = torch.tensor([tokenizer.encode(read_source(held_out[0]))[:512]])
    with torch.no_grad():
        loss = F.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:]).item()
    summary = json.loads((ASSETS / "embedded" / "training_summary.json").read_text())
    assert loss < summary["unigram_held_out_loss"] - 1.5, loss
