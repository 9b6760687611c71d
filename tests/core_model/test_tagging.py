"""Words with offsets, spans <-> BIO tags, and the annotated-corpus reader (CoNLL and JSONL),
on the NCBI-disease corpus in ../shared/datasets and on small files written here."""

import itertools
import json

import pytest
import torch

from core_model.datasets import dataset_dir
from core_model.tagging import (
    bio_viterbi,
    is_bio,
    read_tagged,
    spans_to_tags,
    tags_to_spans,
    words_with_offsets,
)


def test_spans_and_tags_round_trip_through_words():
    text = "Familial adenomatous polyposis (FAP) and 1,250.50 mg."
    words = words_with_offsets(text)
    assert all(text[start:end] == word for word, start, end in words)
    assert ("1,250.50", 41, 49) in words
    spans = [("Disease", 0, 30), ("Disease", 32, 35)]
    tags, cut = spans_to_tags(words, spans)
    assert tags[:6] == ["B-Disease", "I-Disease", "I-Disease", "O", "B-Disease", "O"]
    assert cut == []
    assert [(label, start, end) for label, start, end, _ in tags_to_spans(words, tags)] == spans


def test_a_span_cutting_a_word_is_reported_and_overlaps_are_refused():
    words = words_with_offsets("hypertension")
    tags, cut = spans_to_tags(words, [("Disease", 5, 12)])  # "tension" inside one word
    assert tags == ["B-Disease"] and cut == [("Disease", 5, 12)]
    with pytest.raises(ValueError, match="overlap"):
        spans_to_tags(words_with_offsets("lung cancer"), [("Disease", 0, 11), ("Disease", 5, 11)])


def test_confidences_average_over_an_entity_words():
    words = words_with_offsets("breast cancer here")
    spans = tags_to_spans(words, ["B-Disease", "I-Disease", "O"], [0.9, 0.7, 0.99])
    assert spans == [("Disease", 0, 13, 0.8)]


def test_reads_ncbi_disease_as_its_source_counts_it():
    train = read_tagged(dataset_dir("ncbi_disease") / "train.tsv")
    assert len(train) == 5424
    assert sum(len(e["tokens"]) for e in train) == 135701
    assert sum(tag == "B-Disease" for e in train for tag in e["tags"]) == 5134


def test_reads_jsonl_spans_and_tokens(tmp_path):
    path = tmp_path / "notes.jsonl"
    rows = [
        {"text": "Her father had lung cancer.", "entities": [{"start": 15, "end": 26, "label": "Disease"}]},
        {"tokens": ["No", "asthma"], "tags": ["O", "B-Disease"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first, second = read_tagged(path)
    assert first["tokens"][3:5] == ["lung", "cancer"] and first["tags"][3:5] == ["B-Disease", "I-Disease"]
    assert second == rows[1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.tsv", "fever\tB-Disease\ncough\n", r"bad.tsv, line 2: expected a word and its tag"),
        ("bad.tsv", "fever\tDISEASE\n", r"line 1: 'DISEASE' is not a BIO tag"),
        (
            "bad.jsonl",
            '{"text": "abc", "entities": [{"start": 2, "end": 9, "label": "X"}]}\n',
            r"line 1: .*outside the text",
        ),
        ("bad.jsonl", "{not json\n", r"bad.jsonl, line 1: not valid JSON"),
        ("empty.tsv", "\n\n", r"no annotated sentence"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_tagged(path)


LABELS = ["B-Disease", "I-Disease", "B-Gene", "I-Gene", "O"]


def valid(path: list[int]) -> bool:
    tags = [LABELS[i] for i in path]
    return all(
        not t.startswith("I-") or (n > 0 and tags[n - 1][2:] == t[2:] and tags[n - 1] != "O")
        for n, t in enumerate(tags)
    )


def test_viterbi_finds_the_best_valid_tag_sequence():
    generator = torch.Generator().manual_seed(0)
    for words in (1, 2, 4):
        logprobs = torch.randn(words, len(LABELS), generator=generator).log_softmax(-1)
        paths = [list(p) for p in itertools.product(range(len(LABELS)), repeat=words) if valid(list(p))]
        best = max(paths, key=lambda p: float(sum(logprobs[w, t] for w, t in enumerate(p))))
        assert bio_viterbi(logprobs, LABELS) == best


def test_viterbi_never_opens_an_entity_with_an_inside_tag():
    # argmax would read O, I-Disease, I-Gene: an entity opened by I- and a switch of type
    probs = torch.tensor([[0.1, 0.1, 0.0, 0.0, 0.8], [0.3, 0.6, 0.0, 0.0, 0.1], [0.0, 0.4, 0.1, 0.5, 0.0]])
    path = bio_viterbi((probs + 1e-6).log(), LABELS)
    assert [LABELS[i] for i in path] == ["O", "B-Disease", "I-Disease"]
    assert is_bio(LABELS) and not is_bio(["positive", "negative"])
