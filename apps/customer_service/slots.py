"""Slots (key information) of a customer's message: NLU++ banking examples as BIO-tagged words, a
token-classification adapter that tags them, the rule-found key fields merged in, and strict span
scores over the NLU++ "large" cross-validation.

    extractor = SlotExtractor.load("apps/customer_service/assets/slots")
    extractor.extract(["send 20 pounds to amazon prime tomorrow"], reference=date(2024, 3, 12))[0]
    # [Entity("amount_of_money", "20 pounds", 5, 14, 0.93, "slot-tagger"), Entity("company_name", ...)]
    test = nlupp_examples([0, 1])        # {"tokens", "tags", "text", "spans", "cut_spans"} each
    span_scores([e["spans"] for e in test], predicted)      # {"precision", "recall", "f1", "per_type"}

Words are regex words with character offsets (`words_with_offsets`), so a tagged entity always
slices its text: `text[e.start:e.end] == e.value`. A gold span whose boundary falls inside a word
cannot be tagged exactly; `nlupp_examples` keeps such spans in `cut_spans` rather than hide them
(none with WORD_PATTERN over the 20 folds). The key fields of validators.py (IBANs, card numbers,
dates, amounts ...) replace the tagged entities they overlap.

Training lives in training.py; this module reads the data, loads, predicts and scores.

Legend: B batch, T tokens, L labels (BIO tags).
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

from core_model import MoEForCausalLM, Tokenizer
from core_model.checkpoint import encoder_dtype
from core_model.datasets import dataset_dir
from core_model.tagging import Word, spans_to_tags, tags_to_spans, words_with_offsets
from core_model.train.adapters import TaskModel, load_for_inference

from .validators import Entity, find_key_fields

__all__ = [
    "BIO_LABELS",
    "SLOT_TYPES",
    "Entity",
    "SlotExtractor",
    "cross_validation_splits",
    "merge_entities",
    "nlupp_examples",
    "span_scores",
    "tags_to_entities",
    "words_with_offsets",
]

log = logging.getLogger(__name__)

NLUPP = "nlupp_banking"
NLUPP_FOLDS = 20
EXTRACTOR = "slot-tagger"
# The 13 slot types of NLU++ banking, sorted (a test checks them against the 20 folds).
SLOT_TYPES = [
    "amount_of_money", "company_name", "date", "date_from", "date_period", "date_to", "number",
    "person_name", "shopping_category", "time", "time_from", "time_period", "time_to",
]  # fmt: skip
BIO_LABELS = ["O"] + [f"{prefix}-{slot}" for slot in SLOT_TYPES for prefix in ("B", "I")]

Span = tuple[str, int, int]  # slot type, start and end (exclusive) character offsets


# ----------------------------------------------------------------------------- NLU++ data


def nlupp_examples(folds: list[int], root: str | Path | None = None) -> list[dict[str, Any]]:
    """The examples of NLU++ banking `folds` (in that order), each as {"tokens", "tags", "text",
    "spans", "cut_spans"}. `root`: the folder of fold0.json ... fold19.json (default: the
    licensed dataset, core_model.datasets)."""
    directory = Path(root) if root is not None else dataset_dir(NLUPP)
    examples = []
    for fold in folds:
        rows = json.loads((directory / f"fold{fold}.json").read_text(encoding="utf-8"))
        examples += [nlupp_example(row) for row in rows]
    cut = sum(len(e["cut_spans"]) for e in examples)
    if cut:
        log.warning("%d NLU++ slot spans of folds %s end inside a word; tagged by overlap", cut, folds)
    return examples


def nlupp_example(row: dict[str, Any]) -> dict[str, Any]:
    """One NLU++ row as BIO-tagged words: a word is inside a slot when it overlaps its span.

    `spans` are the gold (slot, start, end) character spans, sorted; `cut_spans` those of them
    whose start or end falls inside a word, or that covers no word: a tagger cannot give them
    back exactly (the tags cover whole words).
    """
    text = row["text"]
    words = words_with_offsets(text)
    slots = row.get("slots", {})
    spans = sorted(((slot, *value["span"]) for slot, value in slots.items()), key=lambda s: s[1])
    try:
        tags, cut_spans = spans_to_tags(words, spans)
    except ValueError as error:
        raise ValueError(f"NLU++ slots overlap in {text!r}: {spans}") from error
    tokens = [word for word, _, _ in words]
    return {"tokens": tokens, "tags": tags, "text": text, "spans": spans, "cut_spans": cut_spans}


Split = tuple[list[int], list[int]]  # train folds, test folds


def cross_validation_splits(n_folds: int = NLUPP_FOLDS, test_folds: int = 2) -> list[Split]:
    """(train folds, test folds) of NLU++'s "large" setup: test on `test_folds` consecutive folds,
    train on all the others; with the defaults 10 splits, tested on (0, 1), (2, 3), ... (18, 19)."""
    if test_folds < 1 or n_folds % test_folds or test_folds >= n_folds:
        raise ValueError(f"{n_folds} folds do not split into test blocks of {test_folds}")
    splits = []
    for first in range(0, n_folds, test_folds):
        test = list(range(first, first + test_folds))
        splits.append(([f for f in range(n_folds) if f not in test], test))
    return splits


# ----------------------------------------------------------------------------- tags -> entities


def tags_to_entities(
    text: str, *, words: list[Word], tags: list[str], confidences: list[float] | None = None,
    extractor: str = EXTRACTOR,
) -> list[Entity]:  # fmt: skip
    """Entities of one BIO tagging of `words` (from `words_with_offsets(text)`), by start.

    Decoded as seqeval does (metrics.bio_spans): an I- tag after O or after another type starts an
    entity. The value is the text from the first word's start to the last word's end;
    `confidences` (one per word) give the entity the mean of its words'.
    """
    return [
        Entity(slot, text[start:end], start, end, confidence, extractor)
        for slot, start, end, confidence in tags_to_spans(words, tags, confidences)
    ]


# ----------------------------------------------------------------------------- the extractor


class SlotExtractor:
    """A token-classification TaskModel over regex words, plus the validators' key fields."""

    def __init__(self, model: TaskModel, *, validators: bool = True) -> None:
        if model.task != "token-classification":
            raise ValueError(f"a slot extractor needs a token-classification adapter, got {model.task!r}")
        self.model, self.validators = model, validators

    @classmethod
    def load(
        cls,
        adapter_dir: str | Path,
        *,
        base: MoEForCausalLM | str | None = None,
        tokenizer: Tokenizer | None = None,
        validators: bool = True,
    ) -> SlotExtractor:
        """The adapter in `adapter_dir` on `base` (default: the base it names, else "embedded"),
        LoRA merged into the weights, in checkpoint.encoder_dtype. `tokenizer` defaults to the
        base's own. `validators=False` leaves out the key fields of validators.py (to score the
        tagger alone)."""
        model = load_for_inference(adapter_dir, base=base, tokenizer=tokenizer, dtype=encoder_dtype("cpu"))
        return cls(model, validators=validators)

    def extract(
        self, texts: list[str], *, reference: datetime.date | None = None, batch_size: int = 32
    ) -> list[list[Entity]]:
        """The entities of each text, by start: the validators' key fields, and the tagged slots
        that overlap none of them. `reference`: the date relative dates are read against (default: today)."""
        words_list = [words_with_offsets(text) for text in texts]
        tagged = self.tag([[w for w, _, _ in words] for words in words_list], batch_size=batch_size)
        reference = reference or datetime.date.today()
        out = []
        for text, words, word_tags in zip(texts, words_list, tagged, strict=True):
            tags = [tag for tag, _ in word_tags]
            confidences = [p for _, p in word_tags]
            slots = tags_to_entities(text, words=words, tags=tags, confidences=confidences)
            extra = find_key_fields(text, reference=reference) if self.validators else []
            out.append(merge_entities(slots, extra))
        return out

    def tag(self, words_list: list[list[str]], *, batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """(tag, probability) per word (`TaskModel.tag_with_scores`)."""
        return self.model.tag_with_scores(words_list, batch_size=batch_size)


def merge_entities(slots: list[Entity], key_fields: list[Entity]) -> list[Entity]:
    """The `key_fields`, and the `slots` that overlap none of them, by start.

    A validator's match wins an overlap: its pattern and checksum are exact and its value is
    normalised (an ISO date, a masked card number), where the tagger may call "4321" a date.
    """
    kept = [s for s in slots if all(s.end <= k.start or k.end <= s.start for k in key_fields)]
    return sorted([*key_fields, *kept], key=lambda e: (e.start, e.end))


# ----------------------------------------------------------------------------- scores


def span_scores(gold: list[list[Span]], predicted: list[list[Span]]) -> dict[str, Any]:
    """Strict span scores: a prediction counts only with the same type, start and end as a gold
    span of the same text. Micro precision, recall and F1 over all texts, and per type
    {"precision", "recall", "f1", "support"} for every type in gold or predicted.

    Over character spans, not the word tags of metrics.entity_scores: a gold span that does not
    fall on word boundaries then counts as missed, as it is for a user.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold texts but {len(predicted)} predicted")
    true = {(n, *span) for n, spans in enumerate(gold) for span in spans}
    found = {(n, *span) for n, spans in enumerate(predicted) for span in spans}
    per_type = {}
    for slot in sorted({s[1] for s in true | found}):
        true_slot, found_slot = {s for s in true if s[1] == slot}, {s for s in found if s[1] == slot}
        per_type[slot] = {**_precision_recall_f1(true_slot, found_slot), "support": len(true_slot)}
    return {**_precision_recall_f1(true, found), "per_type": per_type}


def _precision_recall_f1(true: set, found: set) -> dict[str, float]:
    hits = len(true & found)
    precision, recall = hits / max(len(found), 1), hits / max(len(true), 1)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
