"""`verticals train ...`: the commands run the real loops and fail with errors that say where.

.venv/bin/python -m pytest tests/apps/test_cli_train.py -q
"""

import csv
import json

from apps.cli import main
from core_model.datasets import dataset_dir
from core_model.tagging import read_tagged


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def banking77_rows(split: str, per_label: int, labels=("card_arrival", "lost_or_stolen_card")):
    rows, counts = [], dict.fromkeys(labels, 0)
    with open(dataset_dir("banking77") / f"{split}.csv", newline="") as file:
        for row in csv.DictReader(file):
            if counts.get(row["category"], per_label) < per_label:
                counts[row["category"]] += 1
                rows.append({"text": row["text"], "label": row["category"]})
    return rows


def test_train_adapter_writes_a_peft_directory_with_head_and_metrics(checkpoint, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", banking77_rows("train", 8))
    dev = write_jsonl(tmp_path / "dev.jsonl", banking77_rows("test", 4))
    out = tmp_path / "intents"
    argv = ["train", "adapter", "--task", "sequence-classification", "--model", str(checkpoint)]
    argv += ["--train", str(train), "--dev", str(dev), "--out", str(out), "--epochs", "2", "--no-progress"]
    assert main(argv) == 0
    assert f"adapter written to {out}" in capsys.readouterr().out
    for name in ("adapter_config.json", "adapter_model.safetensors", "head.safetensors", "labels.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "labels.json").read_text()) == ["card_arrival", "lost_or_stolen_card"]
    assert json.loads((out / "metrics.json").read_text())["task"] == "sequence-classification"


def test_train_adapter_sets_the_token_heads_options_from_flags(checkpoint, tmp_path):
    sentences = read_tagged(dataset_dir("ncbi_disease") / "train.tsv")[:12]
    data = write_jsonl(tmp_path / "train.jsonl", sentences)
    argv = ["train", "adapter", "--task", "token-classification", "--model", str(checkpoint)]
    argv += ["--train", str(data), "--dev", str(data), "--epochs", "1", "--rank", "2", "--no-progress"]
    runs = [([], (False, 0, False)), (["--bidirectional", "--characters", "8", "--crf"], (True, 8, True))]
    for n, (flags, expected) in enumerate(runs):
        out = tmp_path / f"tagger{n}"
        assert main([*argv, "--out", str(out), *flags]) == 0
        head = json.loads((out / "head_config.json").read_text())["config"]
        assert (head["bidirectional"], head["characters"], head["crf"]) == expected


def test_train_adapter_names_the_file_and_line_of_a_bad_example(checkpoint, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    argv = ["train", "adapter", "--task", "sequence-classification", "--model", str(checkpoint)]
    argv += ["--train", str(train), "--dev", str(train), "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{train}, line 2" in err and "label" in err
    assert not (tmp_path / "x").exists()


def test_train_base_on_missing_data_is_a_clear_error(checkpoint, tmp_path, capsys):
    argv = ["train", "base", "--preset", "tiny", "--tokenizer", str(checkpoint)]
    argv += ["--data", str(tmp_path / "nowhere.txt"), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_train_base_trains_and_exports_a_loadable_checkpoint(checkpoint, tmp_path, capsys):
    from core_model import load_model, load_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n" * 200)
    argv = ["train", "base", "--preset", "tiny", "--tokenizer", str(checkpoint), "--data", str(corpus)]
    argv += ["--held-out", str(corpus), "--steps", "4", "--seq-len", "32", "--batch-size", "4"]
    argv += ["--micro-batch-size", "4", "--warmup-steps", "1", "--eval-every", "4", "--no-progress"]
    argv += ["--run-dir", str(tmp_path / "run"), "--export", str(tmp_path / "model")]
    assert main(argv) == 0
    assert "trained 4 steps" in capsys.readouterr().out
    model = load_model(tmp_path / "model")
    assert (
        model.lm_head.weight.dtype.is_floating_point and load_tokenizer(tmp_path / "model").vocab_size == 300
    )
    card = (tmp_path / "model" / "README.md").read_text()
    assert "4 optimiser steps" in card and "unigram baseline" in card
