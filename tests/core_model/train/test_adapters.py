"""Adapter training on the tiny preset: real banking77 and NCBI-disease subsets, label masking for
chat and fill-in-the-middle, early stopping, adapter state round trips, JSONL errors.

.venv/bin/python -m pytest tests/core_model/train/test_adapters.py -q
"""

import csv
import json

import pytest
import torch

from core_model import load_model, train_tokenizer
from core_model.datasets import dataset_dir
from core_model.packing import Packing
from core_model.tagging import read_tagged
from core_model.tokenizer import END_OF_TURN
from core_model.train import adapters
from core_model.train.adapters import (
    AdapterTrainingConfig,
    adapter_base,
    adapter_state,
    build_task_model,
    evaluate,
    evaluate_examples,
    fine_tune,
    load_adapter_state,
    load_for_inference,
    load_task_model,
    save_task_model,
    train_adapter,
)
from core_model.train.examples import IGNORE_INDEX, Encoded, collate, encode_example, read_examples
from core_model.train.lora import LoRALinear, lora_layers
from core_model.train.metrics import bio_spans, entity_scores

INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "metrics.json"}
HEAD_FILES = {"head.safetensors", "head_config.json", "labels.json"}


def banking77(split: str, per_intent: int) -> list[dict]:
    with open(dataset_dir("banking77") / f"{split}.csv", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [
        {"text": row["text"], "label": intent}
        for intent in INTENTS
        for row in [r for r in rows if r["category"] == intent][:per_intent]
    ]


def ncbi(split: str, count: int) -> list[dict]:
    return read_tagged(dataset_dir("ncbi_disease") / f"{split}.tsv")[:count]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [e["text"] for e in banking77("train", 200)]
    texts += [" ".join(s["tokens"]) for s in ncbi("train", 300)]
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def intents(tokenizer, tmp_path_factory):
    train, dev = banking77("train", 12), banking77("test", 4)
    config = AdapterTrainingConfig(epochs=8, lr=5e-3, patience=0)
    out = tmp_path_factory.mktemp("intents")
    result = train_adapter(
        load_model("tiny"),
        tokenizer,
        task="sequence-classification",
        train=train,
        dev=dev,
        out_dir=out,
        config=config,
        progress=False,
    )
    return result, dev


def test_intent_classifier_learns_banking77(intents):
    result, _ = intents
    start, best = result.metrics["history"][0], result.metrics["best"]
    assert start["step"] == 0 and best["step"] > 0
    assert best["macro_f1"] > start["macro_f1"] + 0.2
    assert best["accuracy"] >= 0.5  # 4 intents: chance is 0.25


def test_intent_classifier_writes_every_file(intents):
    result, _ = intents
    assert {p.name for p in result.path.iterdir()} == ADAPTER_FILES | HEAD_FILES
    assert json.loads((result.path / "labels.json").read_text()) == sorted(INTENTS)
    head = json.loads((result.path / "head_config.json").read_text())
    assert head["type"] == "SequenceClassificationHead" and head["config"]["num_labels"] == 4
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert metrics["train_examples"] == 48 and metrics["task"] == "sequence-classification"
    assert metrics["config"]["rank"] == 8 and len(metrics["history"]) == 9  # start + 8 epochs
    adapter = json.loads((result.path / "adapter_config.json").read_text())
    assert "kv_b_proj" not in adapter["target_modules"] and adapter["lora_dropout"] == 0.05


def test_reloaded_intent_classifier_gives_identical_logits(intents, tokenizer):
    result, dev = intents
    reloaded = load_task_model(load_model("tiny"), result.path, tokenizer=tokenizer)
    ids = torch.tensor([tokenizer.encode(dev[0]["text"], add_bos=True)])
    with torch.no_grad():
        assert torch.equal(reloaded(ids), result.model(ids))
    predictions = reloaded.classify([e["text"] for e in dev])
    assert len(predictions) == len(dev) and {label for label, _ in predictions} <= set(INTENTS)
    assert all(0.25 <= p <= 1.0 for _, p in predictions)  # the top one of 4 probabilities


def test_an_adapter_loaded_for_serving_has_its_lora_merged_and_the_same_logits(intents, tokenizer):
    result, dev = intents
    served = load_for_inference(
        result.path, base=load_model("tiny", dtype=torch.float32), tokenizer=tokenizer
    )
    assert not lora_layers(served.base) and not served.training
    ids = torch.tensor([tokenizer.encode(dev[0]["text"], add_bos=True)])
    with torch.no_grad():
        torch.testing.assert_close(served(ids), result.model.eval()(ids), atol=1e-5, rtol=1e-5)
    assert adapter_base(result.path) == "embedded"  # trained on a model object: no name recorded
    with pytest.raises(ValueError, match="pass tokenizer="):
        load_for_inference(result.path, base=load_model("tiny"))


def test_an_eval_batch_runs_packed_with_the_logits_of_the_padded_batch(intents, tokenizer, monkeypatch):
    result, dev = intents
    served = load_for_inference(
        result.path, base=load_model("tiny", dtype=torch.float32), tokenizer=tokenizer
    )
    texts = sorted({e["text"] for e in dev}, key=len)[::3][:8]  # short to long: padding to pack away
    batch = collate([Encoded(tokenizer.encode(t, add_bos=True), 0) for t in texts], pad_id=0, device="cpu")
    assert Packing.of(batch["attention_mask"]).pays
    with torch.no_grad():
        packed = served(batch["input_ids"], batch["attention_mask"])
        monkeypatch.setattr(Packing, "pays", property(lambda self: False))
        padded = served(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)


def test_an_adapter_loads_for_serving_in_the_dtype_asked(intents, tokenizer):
    result, dev = intents
    base = load_model("tiny", dtype=torch.float32)
    served = load_for_inference(result.path, base=base, tokenizer=tokenizer, dtype=torch.bfloat16)
    assert {p.dtype for p in served.parameters()} == {torch.bfloat16}
    reference = result.model.eval().probabilities([e["text"] for e in dev[:6]])
    assert (served.probabilities([e["text"] for e in dev[:6]]) - reference).abs().max() < 0.05


def test_returned_model_is_the_best_state(intents, tokenizer):
    result, dev = intents
    label_ids = {label: i for i, label in enumerate(result.model.labels)}
    encoded = [
        encode_example(tokenizer, "sequence-classification", e, label_ids=label_ids, max_length=128)
        for e in dev
    ]
    metrics = evaluate(result.model, encoded)
    assert metrics["macro_f1"] == pytest.approx(result.metrics["best"]["macro_f1"])
    assert metrics["loss"] == pytest.approx(result.metrics["best"]["loss"], abs=1e-5)


def test_disease_tagger_on_ncbi(tokenizer, tmp_path):
    train, dev = ncbi("train", 40), ncbi("devel", 10)
    config = AdapterTrainingConfig(epochs=4, batch_size=8, lr=5e-3, patience=0)
    result = train_adapter(
        load_model("tiny"), tokenizer, task="token-classification", train=train, dev=dev, out_dir=tmp_path,
        config=config, progress=False,
    )  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} == ADAPTER_FILES | HEAD_FILES
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for row in [metrics["best"], *metrics["history"]]:
        assert {"f1", "precision", "recall", "token_accuracy", "loss"} <= row.keys()
    assert metrics["best"]["token_accuracy"] > 0.8  # most words are O
    tags = result.model.tag([s["tokens"] for s in dev])
    assert [len(t) for t in tags] == [len(s["tokens"]) for s in dev]
    assert {t for sentence in tags for t in sentence} <= {"B-Disease", "I-Disease", "O"}
    # tag() is the restored best state, word for word
    assert entity_scores([s["tags"] for s in dev], tags)["f1"] == metrics["best"]["f1"]
    pairs = [(g, p) for s, t in zip(dev, tags, strict=True) for g, p in zip(s["tags"], t, strict=True)]
    assert sum(g == p for g, p in pairs) / len(pairs) == pytest.approx(metrics["best"]["token_accuracy"])


def test_spans_are_read_as_seqeval_does():
    assert bio_spans(["B-D", "I-D", "O", "I-D", "B-D", "B-C", "I-D"]) == {
        ("D", 0, 2), ("D", 3, 4), ("D", 4, 5), ("C", 5, 6), ("D", 6, 7)
    }  # fmt: skip
    scores = entity_scores([["B-D", "I-D", "O"]], [["B-D", "O", "O"]])  # wrong end: no match
    assert scores == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
        "matched_entities": 0, "predicted_entities": 1, "gold_entities": 1,
    }  # fmt: skip


def test_chat_labels_only_assistant_turns_and_their_end_token(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my card?"},
        {"role": "assistant", "content": "It is on its way."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome."},
    ]
    encoded = encode_example(tokenizer, "lm", {"messages": messages}, label_ids={}, max_length=512)
    assert encoded.input_ids == tokenizer.encode_chat(messages)
    expected = []
    for turn in (2, 4):
        start = len(tokenizer.encode_chat(messages[:turn], add_generation_prompt=True))
        expected += range(start, start + len(tokenizer.encode(messages[turn]["content"])) + 1)
    labelled = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    assert labelled == expected
    assert all(encoded.labels[i] == encoded.input_ids[i] for i in labelled)
    end_of_turn = tokenizer.token_to_id(END_OF_TURN)
    assert [encoded.input_ids[i] for i in labelled].count(end_of_turn) == 2


def test_fill_in_the_middle_labels_only_the_middle_and_eos(tokenizer):
    example = {"prefix": "def f(x):\n", "middle": "    return x + 1", "suffix": "\nprint(f(2))\n"}
    encoded = encode_example(tokenizer, "lm", example, label_ids={}, max_length=512)
    prompt = tokenizer.encode(tokenizer.fim_prompt(example["prefix"], example["suffix"]), add_bos=True)
    middle = tokenizer.encode(example["middle"]) + [tokenizer.eos_id]
    assert encoded.input_ids == prompt + middle
    assert encoded.labels == [IGNORE_INDEX] * len(prompt) + middle
    plain = encode_example(tokenizer, "lm", {"text": "hello"}, label_ids={}, max_length=512)
    assert plain.labels == plain.input_ids and plain.input_ids[-1] == tokenizer.eos_id


def lm_examples(count: int) -> list[dict]:
    return [{"text": e["text"]} for e in banking77("train", 3)][:count]


def test_early_stopping_stops_when_dev_cannot_improve(tokenizer, tmp_path):
    config = AdapterTrainingConfig(lr=0.0, epochs=10, batch_size=4, patience=2)
    result = train_adapter(
        load_model("tiny"), tokenizer, task="lm", train=lm_examples(8), dev=lm_examples(12)[8:],
        out_dir=tmp_path, config=config, progress=False,
    )  # fmt: skip
    metrics = result.metrics
    assert [row["step"] for row in metrics["history"]] == [0, 2, 4]  # start, then 2 epochs without gain
    assert metrics["steps"] == 4 and metrics["stopped_early"] and metrics["best"]["step"] == 0
    assert {"loss", "perplexity"} <= metrics["best"].keys()


def test_best_state_is_restored_and_written(tokenizer, tmp_path, monkeypatch):
    seen, losses = [], iter([6.0, 5.0, 5.5, 5.7])  # dev loss scripted: best at the second evaluation

    def scripted_evaluate(model, examples, *, batch_size):
        seen.append(adapter_state(model))
        return {"loss": next(losses), "perplexity": 1.0}

    monkeypatch.setattr(adapters, "evaluate", scripted_evaluate)
    config = AdapterTrainingConfig(lr=1e-2, epochs=3, batch_size=4, patience=0)
    result = train_adapter(
        load_model("tiny"), tokenizer, task="lm", train=lm_examples(8), dev=lm_examples(12)[8:],
        out_dir=tmp_path, config=config, progress=False,
    )  # fmt: skip
    assert [row["step"] for row in result.metrics["history"]] == [0, 2, 4, 6]
    assert result.metrics["best"]["step"] == 2 and not result.metrics["stopped_early"]
    final = adapter_state(result.model)
    assert all(torch.equal(final[k], seen[1][k]) for k in final)
    assert not all(torch.equal(final[k], seen[-1][k]) for k in final)  # training went on after the best
    written = adapter_state(load_task_model(load_model("tiny"), tmp_path))
    assert all(torch.equal(written[k], seen[1][k]) for k in final)


def classifier(tokenizer, config, *, seed):
    torch.manual_seed(seed)  # LoRA A and head initialisation
    labels = ["a", "b", "c"]
    return build_task_model(
        load_model("tiny"), tokenizer, task="sequence-classification", labels=labels, config=config
    )


def test_adapter_state_moves_only_lora_and_head(tokenizer):
    config = AdapterTrainingConfig(rank=2, targets=("o_proj", "up_proj"))
    trained = classifier(tokenizer, config, seed=1)
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.weight.normal_(0, 0.1)
    state = adapter_state(trained)
    layers = [m for m in trained.modules() if isinstance(m, LoRALinear)]
    assert len(state) == 2 * len(layers) + 2  # A and B per layer, head weight and bias
    assert all(".lora_A." in k or ".lora_B." in k or k.startswith("head.") for k in state)
    fresh = classifier(tokenizer, config, seed=2)
    ids = torch.tensor([tokenizer.encode("lost my phone", add_bos=True)])
    with torch.no_grad():
        assert not torch.equal(fresh.eval()(ids), trained.eval()(ids))
        load_adapter_state(fresh, state)
        assert torch.equal(fresh(ids), trained(ids))
    wrong = dict(state, **{"head.classifier.weight": torch.zeros(4, 64)})
    with pytest.raises(ValueError, match=r"head.classifier.weight has shape \(4, 64\).*\(3, 64\)"):
        load_adapter_state(fresh, wrong)
    with pytest.raises(ValueError, match="1 missing"):
        load_adapter_state(fresh, {k: v for k, v in state.items() if k != "head.classifier.bias"})


@pytest.mark.parametrize(
    ("task", "line", "message"),
    [
        ("sequence-classification", "{not json", "not valid JSON"),
        ("sequence-classification", '{"text": "hi"}', "missing field 'label'"),
        (
            "token-classification",
            '{"tokens": ["a", "b"], "tags": ["O"]}',
            "'tokens' has 2 words and 'tags' 1",
        ),
        ("lm", '{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ],
)
def test_a_bad_jsonl_line_is_named_with_file_and_line(tmp_path, task, line, message):
    good = {"sequence-classification": '{"text": "hi", "label": "x"}', "lm": '{"text": "hi"}'}
    good["token-classification"] = '{"tokens": ["hi"], "tags": ["O"]}'
    path = tmp_path / "train.jsonl"
    path.write_text(good[task] + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=f"train.jsonl, line 3: .*{message}"):
        read_examples(path, task)
    path.write_text(good[task] + "\n")
    assert len(read_examples(path, task)) == 1


def tagger(tokenizer, *, bidirectional: bool, seed: int = 0, characters: int = 0, crf: bool = False):
    torch.manual_seed(seed)
    config = AdapterTrainingConfig(
        rank=2,
        bidirectional=bidirectional,
        max_length=64,
        batch_size=8,
        lr=5e-3,
        characters=characters,
        crf=crf,
    )
    labels = ["B-Disease", "I-Disease", "O"]
    return build_task_model(
        load_model("tiny"), tokenizer, task="token-classification", labels=labels, config=config
    )


def test_a_bidirectional_tagger_reads_the_words_after_each_word(tokenizer):
    ids = torch.tensor([tokenizer.encode("familial breast cancer", add_bos=True)])
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % tokenizer.vocab_size  # only the last token differs
    for bidirectional in (False, True):
        model = tagger(tokenizer, bidirectional=bidirectional).eval()
        with torch.no_grad():
            first, second = model(ids)[0, 0], model(changed)[0, 0]
        assert torch.equal(first, second) != bidirectional
    saved = tagger(tokenizer, bidirectional=True).head.config
    assert saved["bidirectional"] is True  # written to head_config.json, so a reload reads both ways


def test_a_tagger_with_characters_reads_each_words_spelling(tokenizer, tmp_path, monkeypatch):
    model = tagger(tokenizer, bidirectional=True, characters=8).eval()
    sentences = ncbi("devel", 12)
    label_ids = {label: i for i, label in enumerate(model.labels)}
    encoded = [
        encode_example(tokenizer, "token-classification", s, label_ids=label_ids, max_length=64)
        for s in sentences
    ]
    assert model.reads_spelling and "word_bytes" not in collate(encoded, pad_id=0, device="cpu")
    batch = collate(encoded, pad_id=0, device="cpu", word_bytes=model.reads_spelling)
    assert batch["word_bytes"].shape[:2] == batch["input_ids"].shape
    respelled = batch["word_bytes"].clone()
    respelled[0, encoded[0].word_positions[0], 0] += 1  # the first word's first letter, changed
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["word_bytes"])
        assert not torch.equal(logits[0], model(batch["input_ids"], batch["attention_mask"], respelled)[0])
        assert torch.equal(logits[1:], model(batch["input_ids"], batch["attention_mask"], respelled)[1:])
        monkeypatch.setattr(Packing, "pays", property(lambda self: False))
        padded = model(batch["input_ids"], batch["attention_mask"], batch["word_bytes"])
    torch.testing.assert_close(logits, padded, rtol=1e-4, atol=1e-5)  # packed: the same spelling per word
    with pytest.raises(ValueError, match="word_bytes"):
        model(batch["input_ids"], batch["attention_mask"])
    words = [s["tokens"] for s in sentences]
    save_task_model(
        model, tmp_path, {}, config=AdapterTrainingConfig(rank=2, characters=8), base_source="tiny"
    )
    reloaded = load_task_model(load_model("tiny"), tmp_path, tokenizer=tokenizer)
    assert reloaded.head.config["characters"] == 8
    assert reloaded.tag_with_scores(words) == model.tag_with_scores(words)


def test_fine_tune_lowers_the_loss_and_fedprox_keeps_the_update_closer(tokenizer):
    train = ncbi("train", 32)
    config = AdapterTrainingConfig(rank=2, bidirectional=True, max_length=64, batch_size=8, lr=1e-2, epochs=3)
    drift = {}
    for mu in (0.0, 1.0):
        model = tagger(tokenizer, bidirectional=True)
        start = adapter_state(model)
        before = evaluate_examples(model, train)["loss"]
        stats = fine_tune(model, train, config=config, proximal_mu=mu)
        assert stats["examples"] == 32 and stats["steps"] == 12
        assert evaluate_examples(model, train)["loss"] < before
        drift[mu] = sum(float(((v - start[k]) ** 2).sum()) for k, v in adapter_state(model).items())
    assert drift[1.0] < drift[0.0]


def test_a_crf_tagger_trains_its_transitions_and_decodes_whole_sentences_with_them(tokenizer, tmp_path):
    model = tagger(tokenizer, bidirectional=True, crf=True)
    assert {"head.pair_scores", "head.start_scores", "head.end_scores"} <= adapter_state(model).keys()
    train = ncbi("train", 32)
    before = evaluate_examples(model, train)["loss"]
    fine_tune(
        model, train, config=AdapterTrainingConfig(rank=2, max_length=64, batch_size=8, lr=1e-2, epochs=2)
    )
    assert evaluate_examples(model, train)["loss"] < before
    o, inside = model.labels.index("O"), model.labels.index("I-Disease")
    assert model.head.pair_scores.abs().sum() > 0  # learned from the tag sequences
    assert model.head.pair_scores[o, inside] == 0  # the BIO rule forbids O then I-: nothing to learn
    words = [s["tokens"] for s in ncbi("devel", 6)]
    with torch.no_grad():
        model.head.start_scores[model.labels.index("B-Disease")] = 100.0  # every sentence opens a mention
    model.eval()
    scored = model.tag_with_scores(words)
    assert all(row[0][0] == "B-Disease" and row[0][1] > 0.99 for row in scored)
    assert all(0 < p <= 1 for row in scored for _, p in row)
    save_task_model(model, tmp_path, {}, config=AdapterTrainingConfig(rank=2, crf=True), base_source="tiny")
    reloaded = load_task_model(load_model("tiny"), tmp_path, tokenizer=tokenizer)
    assert reloaded.head.config["crf"] is True
    assert reloaded.tag_with_scores(words) == scored


def test_tag_with_scores_gives_each_word_its_probability(tokenizer):
    model = tagger(tokenizer, bidirectional=True).eval()
    words = [["Fever", "and", "cough"], [], ["Ataxia"]]
    scored = model.tag_with_scores(words)
    assert [len(row) for row in scored] == [3, 0, 1]
    assert all(tag in model.labels and 0 < p <= 1 for row in scored for tag, p in row)
    for row in scored:  # decoded as whole sentences: no entity opened by an inside tag
        tags = ["O"] + [tag for tag, _ in row]
        assert all(not t.startswith("I-") or tags[n][2:] == t[2:] for n, t in enumerate(tags[1:]))
    assert model.tag(words) == [[tag for tag, _ in row] for row in scored]


def test_evaluation_counts_add_up_to_the_scores(tokenizer):
    model = tagger(tokenizer, bidirectional=True)
    dev = ncbi("devel", 20)
    scores = evaluate_examples(model, dev)
    assert scores["gold_entities"] == sum(len(bio_spans(s["tags"])) for s in dev)
    if scores["predicted_entities"]:
        assert scores["precision"] == scores["matched_entities"] / scores["predicted_entities"]


def test_batches_group_like_lengths_and_see_every_example_once_an_epoch():
    lengths = torch.randint(1, 120, (600,), generator=torch.Generator().manual_seed(0)).tolist()
    examples = [adapters.Encoded([0] * n, 0) for n in lengths]
    config = AdapterTrainingConfig(batch_size=8, epochs=2)
    batches = list(adapters._batches(examples, config))
    seen = [id(e) for batch in batches for e in batch]
    assert sorted(seen) == sorted(2 * [id(e) for e in examples])  # each example once per epoch
    padded = sum(len(batch) * max(len(e.input_ids) for e in batch) for batch in batches)
    assert padded < 1.1 * 2 * sum(lengths)  # random batches of 8 pad to ~1.8x here
    first_epoch = batches[: len(batches) // 2]
    assert [len(b[0].input_ids) for b in first_epoch] != sorted(len(b[0].input_ids) for b in first_epoch)
