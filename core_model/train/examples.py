"""Adapter-training examples: read and check JSONL, encode into ids and labels, collate batches.

    train = read_examples("train.jsonl", "token-classification")
    label_ids = {"B-Disease": 0, "I-Disease": 1, "O": 2}
    encoded = [encode_example(tokenizer, "token-classification", e, label_ids=label_ids, max_length=128)
               for e in train]
    batch = collate(encoded[:16], pad_id=tokenizer.pad_id or 0, device=torch.device("cpu"))
    batch["input_ids"].shape, batch["labels"].shape       # [B, T] and [B, T]

Tasks and their examples (one JSON object per line in a .jsonl file):
  "sequence-classification"  {"text", "label"}; a head pools the trunk's hidden states
  "token-classification"     {"tokens": [words], "tags": [BIO tags]}; the first sub-token of each
                             word carries its tag, the others -100; predictions come back per word
  "lm"                       {"text"} (loss on every token), {"messages": [{"role", "content"}]}
                             (loss on assistant turns only, their end-of-turn token included) or
                             {"prefix", "middle", "suffix"} (fill-in-the-middle in the tokenizer's
                             family format, `core_model.fim`: loss on the middle and eos only)

This module knows nothing of models, training or metrics (adapters.py, metrics.py).

Legend: B batch, T tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..tokenizer import END_OF_TURN, Tokenizer

TASKS = ("lm", "sequence-classification", "token-classification")
IGNORE_INDEX = -100  # label of positions that carry no loss (cross_entropy's ignore_index)


@dataclass
class Encoded:
    """One example as ids. `labels`: per token (IGNORE_INDEX: no loss), or one class id."""

    input_ids: list[int]
    labels: list[int] | int
    word_positions: list[int | None] | None = None  # token classification: first sub-token per word
    word_labels: list[int] | None = None  # token classification: gold tag id per word
    words: list[str] | None = None  # token classification: the words (their spelling, for the head)


# ----------------------------------------------------------------------------- reading


def check_example(task: str, example: Any) -> None:
    """Raise ValueError saying what is wrong with one example of `task`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if not isinstance(example, dict):
        raise ValueError(f"an example must be a JSON object, got {type(example).__name__}")
    if task == "sequence-classification":
        _require(example, text=str, label=str)
    elif task == "token-classification":
        _require(example, tokens=list, tags=list)
        tokens, tags = example["tokens"], example["tags"]
        if not tokens or len(tokens) != len(tags):
            raise ValueError(f"'tokens' has {len(tokens)} words and 'tags' {len(tags)}; need equal, >= 1")
        if not all(isinstance(x, str) and x for x in [*tokens, *tags]):
            raise ValueError("'tokens' and 'tags' must hold non-empty strings")
    elif "messages" in example:
        _require(example, messages=list)
        for message in example["messages"]:
            if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
                raise ValueError(f"each message needs 'role' and 'content'; got {message!r}")
        if not any(m["role"] == "assistant" for m in example["messages"]):
            raise ValueError("'messages' has no assistant turn, so nothing to learn from")
    elif "middle" in example:
        _require(example, prefix=str, middle=str, suffix=str)
    elif "text" in example:
        _require(example, text=str)
    else:
        raise ValueError("an lm example needs 'text', 'messages', or 'prefix' + 'middle' + 'suffix'")


def _require(example: dict, **fields: type) -> None:
    for name, kind in fields.items():
        if name not in example:
            raise ValueError(f"missing field {name!r}")
        if not isinstance(example[name], kind):
            raise ValueError(f"field {name!r} must be a {kind.__name__}, got {type(example[name]).__name__}")


def read_examples(path: str | Path, task: str) -> list[dict[str, Any]]:
    """Examples of `task` from a JSONL file; a bad line raises ValueError naming file and line."""
    path = Path(path)
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        try:
            check_example(task, example)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
        examples.append(example)
    return examples


# ----------------------------------------------------------------------------- encoding


def encode_words(tokenizer: Tokenizer, words: list[str], *, max_length: int) -> tuple[list[int], list]:
    """Ids of `words` joined by spaces, and each word's first token position (None: cut off)."""
    ids = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    positions: list[int | None] = []
    for i, word in enumerate(words):
        pieces = tokenizer.encode(word if i == 0 else " " + word)
        if not pieces or len(ids) + len(pieces) > max_length:
            positions.append(None)
            continue
        positions.append(len(ids))
        ids.extend(pieces)
    return ids, positions


def encode_example(
    tokenizer: Tokenizer, task: str, example: dict[str, Any], *, label_ids: dict[str, int], max_length: int
) -> Encoded:
    """One checked example as ids and labels (see the module docstring for the rules)."""
    bos = tokenizer.bos_id is not None
    if task == "sequence-classification":
        return Encoded(
            tokenizer.encode(example["text"], add_bos=bos)[:max_length], label_ids[example["label"]]
        )
    if task == "token-classification":
        ids, positions = encode_words(tokenizer, example["tokens"], max_length=max_length)
        tags = [label_ids[tag] for tag in example["tags"]]
        labels = [IGNORE_INDEX] * len(ids)
        for position, tag in zip(positions, tags, strict=True):
            if position is not None:
                labels[position] = tag
        return Encoded(ids, labels, positions, tags, list(example["tokens"]))
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    if "messages" in example:
        ids, labels = _encode_chat(tokenizer, example["messages"])
    elif "middle" in example:
        prompt = tokenizer.encode(tokenizer.fim_prompt(example["prefix"], example["suffix"]), add_bos=bos)
        middle = tokenizer.encode(example["middle"]) + eos
        ids, labels = prompt + middle, [IGNORE_INDEX] * len(prompt) + middle
    else:
        ids = tokenizer.encode(example["text"], add_bos=bos) + eos
        labels = list(ids)
    return Encoded(ids[:max_length], labels[:max_length])


def _encode_chat(tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Ids of the rendered chat, labelled only on assistant content and its end-of-turn token.

    Each assistant turn's characters are found by rendering the conversation up to it (with the
    generation prompt: where the model starts writing) and through it; tokens starting inside
    those characters keep their ids as labels.
    """
    text = tokenizer.apply_chat_template(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through)):
            raise ValueError("the chat template does not render a conversation's turns as prefixes")
        turn = text[len(before) : len(through)]
        stop = turn.rfind(END_OF_TURN)
        spans.append((len(before), len(before) + (stop + len(END_OF_TURN) if stop >= 0 else len(turn))))
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(encoding.ids, encoding.offsets, strict=True)
    ]
    return list(encoding.ids), labels


WORD_BYTES = 24  # bytes of a word's spelling kept for the head: all, or the first and last 12


def spelling(word: str) -> list[int]:
    """A word's UTF-8 bytes as ids (byte + 1), at most WORD_BYTES: its ends when longer."""
    ids = [b + 1 for b in word.encode("utf-8")]
    half = WORD_BYTES // 2
    return ids if len(ids) <= WORD_BYTES else ids[:half] + ids[-half:]


def collate(
    batch: list[Encoded], *, pad_id: int, device: torch.device, word_bytes: bool = False
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask [B, T] and labels ([B, T] or [B]); with
    `word_bytes` (for a head that reads spellings), word_bytes [B, T, WORD_BYTES]: each word's
    `spelling` at its first token, zeros elsewhere."""
    T = max(len(e.input_ids) for e in batch)
    ids_BT = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask_BT = torch.zeros(len(batch), T, dtype=torch.long)
    for row, example in enumerate(batch):
        ids_BT[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        mask_BT[row, : len(example.input_ids)] = 1
    out = {"input_ids": ids_BT.to(device), "attention_mask": mask_BT.to(device)}
    if isinstance(batch[0].labels, int):
        out["labels"] = torch.tensor([e.labels for e in batch], device=device)
    else:
        labels_BT = torch.full((len(batch), T), IGNORE_INDEX, dtype=torch.long)
        for row, example in enumerate(batch):
            labels_BT[row, : len(example.labels)] = torch.tensor(example.labels)  # type: ignore[arg-type]
        out["labels"] = labels_BT.to(device)
    if word_bytes:
        out["word_bytes"] = _word_bytes(batch, T).to(device)
    return out


def _word_bytes(batch: list[Encoded], T: int) -> torch.Tensor:
    bytes_BTC = torch.zeros(len(batch), T, WORD_BYTES, dtype=torch.long)
    for row, example in enumerate(batch):
        if example.words is None or example.word_positions is None:
            raise ValueError("word_bytes needs token-classification examples (their words and positions)")
        for word, position in zip(example.words, example.word_positions, strict=True):
            if position is not None:
                ids = spelling(word)
                bytes_BTC[row, position, : len(ids)] = torch.tensor(ids)
    return bytes_BTC
