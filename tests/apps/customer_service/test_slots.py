"""Slots: words with offsets, NLU++ spans as BIO tags, BIO decoding, strict span scores, the
"large" cross-validation splits, and one tiny adapter trained and wrapped in a SlotExtractor.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/customer_service/test_slots.py -q
"""

import datetime
import json

import pytest

from apps.customer_service.slots import (
    BIO_LABELS,
    SLOT_TYPES,
    Entity,
    SlotExtractor,
    cross_validation_splits,
    merge_entities,
    nlupp_examples,
    span_scores,
    tags_to_entities,
    words_with_offsets,
)
from core_model import load_model, train_tokenizer
from core_model.train.adapters import AdapterTrainingConfig, train_adapter

REFERENCE = datetime.date(2024, 3, 12)


@pytest.fixture(scope="module")
def all_folds():
    return nlupp_examples(list(range(20)))


def write_fold(tmp_path, rows):
    (tmp_path / "fold0.json").write_text(json.dumps(rows))
    return tmp_path


# ----------------------------------------------------------------------------- words and data


def test_words_keep_an_amount_whole_and_their_offsets_slice_the_text():
    text = "Pay £1,250.50 to Bob's account."
    words = words_with_offsets(text)
    assert [w for w, _, _ in words] == ["Pay", "£", "1,250.50", "to", "Bob", "'", "s", "account", "."]
    assert all(text[start:end] == word for word, start, end in words)


def test_slot_types_are_those_of_the_20_folds(all_folds):
    assert SLOT_TYPES == sorted({slot for e in all_folds for slot, _, _ in e["spans"]})
    assert len(SLOT_TYPES) == 13 and len(all_folds) == 2071


def test_no_nlupp_span_is_cut_by_a_word_boundary(all_folds):
    assert sum(len(e["spans"]) for e in all_folds) == 944
    assert sum(len(e["cut_spans"]) for e in all_folds) == 0


def test_every_nlupp_tag_is_a_bio_label(all_folds):
    assert {tag for e in all_folds for tag in e["tags"]} <= set(BIO_LABELS)


def test_spans_become_bio_tags_on_the_words_they_overlap(tmp_path):
    text = "pay 20 pounds to amazon prime"
    slots = {"company_name": {"span": [17, 29]}, "amount_of_money": {"span": [4, 13]}}
    (example,) = nlupp_examples([0], root=write_fold(tmp_path, [{"text": text, "slots": slots}]))
    amount, company = ["B-amount_of_money", "I-amount_of_money"], ["B-company_name", "I-company_name"]
    assert example["tags"] == ["O", *amount, "O", *company]
    assert example["spans"] == [("amount_of_money", 4, 13), ("company_name", 17, 29)]


def test_a_span_ending_inside_a_word_is_tagged_and_reported(tmp_path):
    rows = [{"text": "at amazonprime", "slots": {"company_name": {"span": [3, 9]}}}]  # "amazon"
    (example,) = nlupp_examples([0], root=write_fold(tmp_path, rows))
    assert example["tags"] == ["O", "B-company_name"]
    assert example["cut_spans"] == [("company_name", 3, 9)]


def test_an_example_without_slots_is_all_o(tmp_path):
    rows = [{"text": "good bye", "intents": ["end_call"]}]
    (example,) = nlupp_examples([0], root=write_fold(tmp_path, rows))
    assert example["tags"] == ["O", "O"] and example["spans"] == []


def test_large_setup_tests_on_consecutive_pairs_and_trains_on_the_rest():
    splits = cross_validation_splits()
    assert [test for _, test in splits] == [[i, i + 1] for i in range(0, 20, 2)]
    assert all(sorted(train + test) == list(range(20)) and len(train) == 18 for train, test in splits)


# ----------------------------------------------------------------------------- tags and scores


def test_an_i_tag_without_b_starts_an_entity_whose_value_slices_the_text():
    text = "send 20 pounds to amazon prime"
    words = words_with_offsets(text)
    tags = ["O", "I-amount_of_money", "I-amount_of_money", "O", "B-company_name", "I-person_name"]
    entities = tags_to_entities(text, words=words, tags=tags)
    assert [(e.entity, e.value, e.start, e.end) for e in entities] == [
        ("amount_of_money", "20 pounds", 5, 14),
        ("company_name", "amazon", 18, 24),
        ("person_name", "prime", 25, 30),
    ]
    assert {e.extractor for e in entities} == {"slot-tagger"}


def test_entity_confidence_is_the_mean_of_its_words():
    text = "20 pounds"
    tags = ["B-amount_of_money", "I-amount_of_money"]
    (entity,) = tags_to_entities(text, words=words_with_offsets(text), tags=tags, confidences=[0.9, 0.5])
    assert entity.confidence == pytest.approx(0.7)


def test_span_scores_are_strict_about_offsets():
    gold = [[("date", 0, 9), ("time", 13, 17)], [("date", 0, 5)]]
    predicted = [[("date", 0, 9), ("time", 13, 16)], []]  # the time is one character short
    scores = span_scores(gold, predicted)
    assert (scores["precision"], scores["recall"]) == (0.5, pytest.approx(1 / 3))
    assert scores["per_type"]["time"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["date"]["f1"] == pytest.approx(2 / 3)


def test_a_key_field_wins_over_a_tagged_slot_it_overlaps():
    slot = Entity("date", "4321", 5, 9, 0.8, "slot-tagger")
    apart = Entity("amount_of_money", "£20", 12, 15, 0.9, "slot-tagger")
    inside = Entity("card_last_four", "4321", 5, 9)
    assert merge_entities([slot, apart], [inside]) == [inside, apart]


# ----------------------------------------------------------------------------- a tiny tagger


@pytest.fixture(scope="module")
def extractor(all_folds, tmp_path_factory):
    """A tiny-preset tagger, one epoch on 30 NLU++ examples with slots, loaded back from disk."""
    tokenizer = train_tokenizer([e["text"] for e in all_folds], vocab_size=300)
    with_slots = [e for e in all_folds if e["spans"]]
    train, dev = with_slots[:30], with_slots[30:38]
    strip = lambda examples: [{"tokens": e["tokens"], "tags": e["tags"]} for e in examples]
    out = tmp_path_factory.mktemp("slots")
    config = AdapterTrainingConfig(epochs=1, batch_size=8, rank=2, max_length=48)
    train_adapter(
        load_model("tiny"), tokenizer, task="token-classification", train=strip(train), dev=strip(dev),
        out_dir=out, labels=BIO_LABELS, config=config, progress=False,
    )  # fmt: skip
    return SlotExtractor.load(out, base=load_model("tiny"), tokenizer=tokenizer), dev


def test_a_trained_tagger_gives_well_formed_entities(extractor):
    slots, dev = extractor
    texts = [e["text"] for e in dev] + ["Refund £20 to GB82 WEST 1234 5698 7654 32", ""]
    results = slots.extract(texts, reference=REFERENCE)
    assert len(results) == len(texts) and results[-1] == []
    assert any(e.entity == "iban" for e in results[-2])  # a key field joins the tagged slots
    for text, entities in zip(texts, results, strict=True):
        assert all(a.end <= b.start for a, b in zip(entities, entities[1:], strict=False))  # sorted, disjoint
        for e in entities:
            assert 0 <= e.start < e.end <= len(text)
            if e.extractor == "slot-tagger":
                assert e.entity in SLOT_TYPES and text[e.start : e.end] == e.value
                assert 0.0 <= e.confidence <= 1.0


def test_tags_with_confidences_agree_with_task_model_tag(extractor):
    slots, dev = extractor
    words = [e["tokens"] for e in dev] + [[]]
    assert [[tag for tag, _ in row] for row in slots.tag(words)] == slots.model.tag(words[:-1]) + [[]]


def test_without_validators_only_tagged_slots_come_back(extractor):
    slots, _ = extractor
    (entities,) = SlotExtractor(slots.model, validators=False).extract(["GB82 WEST 1234 5698 7654 32"])
    assert {e.extractor for e in entities} <= {"slot-tagger"}
