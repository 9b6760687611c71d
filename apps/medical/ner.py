"""Entity recognition over free text: the federated adapter and head, character offsets out.

    recognizer = EntityRecognizer.load("runs/adapters/medical")
    recognizer.recognize(["Two siblings with ataxia-telangiectasia were seen."])[0]
    # [Entity(label="Disease", start=18, end=40, text="ataxia-telangiectasia", score=0.97)]

Texts are cut into sentences, sentences into regex words (core_model.tagging), long sentences
into windows of WINDOW_WORDS words; the tagger reads each window whole (its trunk runs
bidirectionally) and its BIO tags become character spans of the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core_model import MoEForCausalLM, Tokenizer
from core_model.tagging import Word, tags_to_spans, words_with_offsets
from core_model.train.adapters import TaskModel, load_for_inference
from core_model.train.registry import content_hash

SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
WINDOW_WORDS = 80


@dataclass(frozen=True)
class Entity:
    label: str
    start: int
    end: int  # exclusive: text[start:end] == self.text
    text: str
    score: float


class EntityRecognizer:
    def __init__(self, model: TaskModel, *, version: str) -> None:
        if model.task != "token-classification":
            raise ValueError(f"entity recognition needs a token-classification adapter, got {model.task!r}")
        self.model, self.version = model, version

    @classmethod
    def load(
        cls,
        adapter_dir: str | Path,
        *,
        base: MoEForCausalLM | str | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> EntityRecognizer:
        """The adapter in `adapter_dir` on `base` (default: the base it names), LoRA merged."""
        model = load_for_inference(adapter_dir, base=base, tokenizer=tokenizer)
        return cls(model, version=content_hash(adapter_dir))

    @property
    def labels(self) -> list[str]:
        return sorted({tag.partition("-")[2] for tag in self.model.labels if tag != "O"})

    def recognize(self, texts: list[str], *, batch_size: int = 32) -> list[list[Entity]]:
        """The entities of each text, by start."""
        windows: list[tuple[int, list[Word]]] = []  # (text index, words with offsets in that text)
        for n, text in enumerate(texts):
            for sentence in SENTENCE.finditer(text):
                words = [
                    (w, start + sentence.start(), end + sentence.start())
                    for w, start, end in words_with_offsets(sentence.group())
                ]
                windows += [(n, words[i : i + WINDOW_WORDS]) for i in range(0, len(words), WINDOW_WORDS)]
        tagged = self.model.tag_with_scores(
            [[w for w, _, _ in words] for _, words in windows], batch_size=batch_size
        )
        out: list[list[Entity]] = [[] for _ in texts]
        for (n, words), scored in zip(windows, tagged, strict=True):
            tags, scores = [t for t, _ in scored], [p for _, p in scored]
            for label, start, end, score in tags_to_spans(words, tags, scores):
                out[n].append(Entity(label, start, end, texts[n][start:end], float(score or 0.0)))
        return out
