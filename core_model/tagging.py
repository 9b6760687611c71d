"""Tagged text: words with character offsets, character spans <-> BIO word tags, and the two
annotated-corpus formats every entity tagger here reads (CoNLL BIO columns, JSONL spans).

    words = words_with_offsets("Fever in 2 patients")    # [("Fever", 0, 5), ("in", 6, 8), ...]
    tags, cut = spans_to_tags(words, [("Disease", 0, 5)])  # ["B-Disease", "O", "O", "O"], []
    tags_to_spans(words, tags)                              # [("Disease", 0, 5, None)]
    read_tagged("train.tsv")       # [{"tokens": [...], "tags": [...]}, ...] (CoNLL or JSONL)
    bio_viterbi(logprobs_WL, labels)   # the best tag ids with every I-X after a B-X or I-X

Words are regex words (WORD_PATTERN), so a span found from tags always slices its text:
`text[start:end]`. A span whose edge falls inside a word cannot be tagged exactly; it comes back
in `cut` rather than being hidden. Tags are read the way seqeval reads them (metrics.bio_spans).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .crf import BLOCKED, Transitions, viterbi

# A number with its thousands and decimal separators (1,250.50) is one word; so is any run of word
# characters; any other non-space character is a word of its own.
WORD_PATTERN = re.compile(r"\d+(?:[.,]\d+)*|\w+|[^\w\s]")
JSONL_SUFFIXES = (".jsonl", ".ndjson")

Word = tuple[str, int, int]  # the word, its start and end (exclusive) character offsets
Span = tuple[str, int, int]  # label, start and end (exclusive) character offsets


def bio_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entities (type, start, end exclusive) of a BIO sequence, read as seqeval's default mode
    does: an I- tag after O or after another type starts a new entity."""
    spans, start, kind = set(), None, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and start is not None and label == kind
        if start is not None and not continues:
            spans.add((kind, start, i))
            start = None
        if prefix in ("B", "I") and not continues:
            start, kind = i, label
    return spans


def words_with_offsets(text: str) -> list[Word]:
    """The words of `text` (WORD_PATTERN) and their character offsets."""
    return [(m.group(), m.start(), m.end()) for m in WORD_PATTERN.finditer(text)]


def spans_to_tags(words: list[Word], spans: list[Span]) -> tuple[list[str], list[Span]]:
    """BIO tags of `words` (a word is inside a span when it overlaps it), and the spans that
    cannot be given back exactly: an edge inside a word, or no word covered. Overlapping spans
    are refused (ValueError), since one word carries one tag."""
    tags = ["O"] * len(words)
    cut = []
    for label, start, end in sorted(spans, key=lambda s: (s[1], s[2])):
        inside = [i for i, (_, w_start, w_end) in enumerate(words) if w_start < end and w_end > start]
        if any(tags[i] != "O" for i in inside):
            raise ValueError(f"spans overlap: {label} {start}-{end} covers a word already tagged")
        for n, i in enumerate(inside):
            tags[i] = f"{'B' if n == 0 else 'I'}-{label}"
        cuts_a_word = any(w_start < edge < w_end for _, w_start, w_end in words for edge in (start, end))
        if cuts_a_word or not inside:
            cut.append((label, start, end))
    return tags, cut


def tags_to_spans(
    words: list[Word], tags: list[str], confidences: list[float] | None = None
) -> list[tuple[str, int, int, float | None]]:
    """(label, start, end, confidence) of each entity of one BIO tagging of `words`, by start.
    `confidences` (one per word) give an entity the mean of its words'; else None."""
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    out = []
    for label, first, last in sorted(bio_spans(tags), key=lambda s: s[1]):
        confidence = None
        if confidences is not None:
            confidence = round(sum(confidences[first:last]) / (last - first), 4)
        out.append((label, words[first][1], words[last - 1][2], confidence))
    return out


# ----------------------------------------------------------------------------- corpora


def read_tagged(path: str | Path) -> list[dict[str, Any]]:
    """The sentences of an annotated corpus as {"tokens", "tags"} examples.

    `.jsonl` / `.ndjson`: one JSON object per line, either {"tokens": [...], "tags": [...]} or
    {"text": ..., "entities": [{"start", "end", "label"}, ...]} (character offsets; the text is
    split into words_with_offsets). Any other file: CoNLL columns, one word per line with its BIO
    tag in the last column (tab or spaces), a blank line between sentences, "-DOCSTART-" lines
    skipped. Errors name the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no annotated corpus at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    examples = _read_jsonl(path, lines) if path.suffix in JSONL_SUFFIXES else _read_conll(path, lines)
    if not examples:
        raise ValueError(f"{path}: no annotated sentence found")
    return examples


def _read_conll(path: Path, lines: list[str]) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate([*lines, ""], start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                examples.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if len(columns) < 2:
            raise ValueError(f"{path}, line {number}: expected a word and its tag, got {line!r}")
        tag = columns[-1].strip()
        _check_tag(path, number, tag)
        tokens.append(columns[0].strip())
        tags.append(tag)
    return examples


def _read_jsonl(path: Path, lines: list[str]) -> list[dict[str, Any]]:
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        try:
            examples.append(_example(row))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
        for tag in examples[-1]["tags"]:
            _check_tag(path, number, tag)
    return examples


def _example(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "tokens" in row:
        tokens, tags = row["tokens"], row.get("tags")
        if not isinstance(tags, list) or len(tags) != len(tokens):
            raise ValueError(f"'tags' must be a list as long as 'tokens' ({len(tokens)})")
        return {"tokens": [str(t) for t in tokens], "tags": [str(t) for t in tags]}
    text = row.get("text")
    if not isinstance(text, str):
        raise ValueError("expected 'tokens' and 'tags', or 'text' and 'entities'")
    words = words_with_offsets(text)
    spans = []
    for entity in row.get("entities", []):
        start, end, label = int(entity["start"]), int(entity["end"]), str(entity["label"])
        if not 0 <= start < end <= len(text):
            raise ValueError(f"entity {label} {start}-{end} is outside the text ({len(text)} characters)")
        spans.append((label, start, end))
    tags, _ = spans_to_tags(words, spans)
    return {"tokens": [w for w, _, _ in words], "tags": tags}


def _check_tag(path: Path, number: int, tag: str) -> None:
    prefix, dash, label = tag.partition("-")
    if tag != "O" and not (prefix in ("B", "I") and dash and label):
        raise ValueError(f"{path}, line {number}: {tag!r} is not a BIO tag (O, B-<type> or I-<type>)")


# ----------------------------------------------------------------------------- decoding


def is_bio(labels: list[str]) -> bool:
    """Whether `labels` is a BIO tag set ("O" and B-/I- tags only)."""
    return "O" in labels and all(t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2) for t in labels)


def bio_transitions(labels: list[str]) -> Transitions:
    """The BIO tag set's rules as transition scores: 0 where allowed, crf.BLOCKED where an I-X
    would follow anything but B-X or I-X (or open the sentence)."""
    inside = [t[2:] if t.startswith("I-") else None for t in labels]
    allowed_LL = torch.tensor([[x is None or labels[i][2:] == x for x in inside] for i in range(len(labels))])
    opens_L = torch.tensor([x is None for x in inside])
    zero, blocked = torch.tensor(0.0), torch.tensor(BLOCKED)
    pairs_LL, start_L = torch.where(allowed_LL, zero, blocked), torch.where(opens_L, zero, blocked)
    return Transitions(pairs_LL, start_L, torch.zeros(len(labels)))


def bio_viterbi(logprobs_WL: torch.Tensor, labels: list[str]) -> list[int]:
    """The most likely tag sequence of one sentence (word log-probabilities [W, L]) in which every
    I-X follows a B-X or an I-X: a tagger's word-by-word argmax can open an entity with I-X or
    switch type mid-entity, which exact-span scoring counts as a wrong entity."""
    return viterbi(logprobs_WL.float(), bio_transitions(labels))
