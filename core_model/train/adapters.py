"""Adapter training: LoRA on the frozen base, plus a task head for classification tasks.

    config = AdapterTrainingConfig(epochs=3, lr=2e-3)
    result = train_adapter(load_model("embedded"), tokenizer, task="sequence-classification",
                           train=read_examples("train.jsonl", "sequence-classification"),
                           dev=read_examples("dev.jsonl", "sequence-classification"),
                           out_dir="adapters/intents", config=config)
    model = load_task_model(load_model("embedded"), "adapters/intents", tokenizer=tokenizer)
    model.classify(["my card has not arrived"])          # [("card_arrival", 0.91)]

Tasks are "lm", "sequence-classification" and "token-classification"; examples.py describes
their examples and how each is encoded, metrics.py the dev metrics that pick the best state.

`train_adapter` writes `out_dir`: the PEFT adapter (adapter_config.json, adapter_model.safetensors),
head.safetensors + head_config.json and labels.json (classification), metrics.json (always).
`adapter_state` / `load_adapter_state` move only LoRA and head tensors: what a federated client
sends. This module is not the federated loop, the engine or the registry (see registry.py).

Legend: B batch, T tokens, V vocabulary, L labels.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import load_model
from ..crf import Transitions, marginals, negative_log_likelihood, sentence_scores, viterbi
from ..engine.lora import CONFIG_FILE, read_adapter, save_adapter
from ..heads import Head, SequenceClassificationHead, TokenClassificationHead
from ..model import MoEForCausalLM
from ..moe import use_dense_experts
from ..packing import Packing
from ..tagging import bio_transitions, bio_viterbi, is_bio
from ..tokenizer import Tokenizer, load_tokenizer
from .examples import IGNORE_INDEX, TASKS, Encoded, check_example, collate, encode_example, encode_words
from .lora import DEFAULT_TARGETS, inject_lora, lora_layers, lora_weights, merge_lora
from .metrics import SELECTION, accuracy, is_better, macro_f1, tagging_scores
from .optim import adamw, clip_gradients, warmup_cosine

log = logging.getLogger(__name__)

HEAD_WEIGHTS, HEAD_CONFIG = "head.safetensors", "head_config.json"
LABELS_FILE, METRICS_FILE = "labels.json", "metrics.json"
HEADS: dict[str, type[Head]] = {
    "sequence-classification": SequenceClassificationHead,
    "token-classification": TokenClassificationHead,
}


@dataclass
class AdapterTrainingConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05  # on the LoRA input
    targets: tuple[str, ...] = DEFAULT_TARGETS
    lr: float = 2e-3
    weight_decay: float = 0.0
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 128  # tokens per example; longer ones are cut at the end
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0  # 0 disables clipping
    patience: int = 2  # evaluations without improvement before stopping; 0 never stops early
    eval_every: int | None = None  # optimiser steps; None: once per epoch
    seed: int = 0
    pooling: str = "last"  # sequence classification
    bidirectional: bool = False  # token classification: the trunk reads the whole sentence
    head_dropout: float = 0.1
    characters: int = 0  # token classification: the head's spelling encoder width (0: none)
    crf: bool = False  # token classification: learn tag-transition scores (a linear-chain CRF)

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        positive = dict(rank=self.rank, epochs=self.epochs, batch_size=self.batch_size)
        positive["max_length"] = self.max_length
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"AdapterTrainingConfig.{name} must be >= 1, got {value}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"AdapterTrainingConfig.eval_every must be >= 1 or None, got {self.eval_every}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"AdapterTrainingConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class AdapterResult:
    path: Path
    metrics: dict[str, Any]
    model: TaskModel


# ----------------------------------------------------------------------------- the model


class TaskModel(nn.Module):
    """The LoRA-injected base plus the task head (None for "lm").

    `forward` gives task logits: [B, T, V] for "lm", [B, L] for sequence and [B, T, L] for token
    classification. `tokenizer` is needed only by the `classify` and `tag` helpers.
    """

    def __init__(
        self,
        base: MoEForCausalLM,
        head: Head | None,
        *,
        task: str,
        labels: list[str] | None = None,
        tokenizer: Tokenizer | None = None,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if (head is None) != (task == "lm"):
            raise ValueError(f"task {task!r} {'takes no' if task == 'lm' else 'needs a'} head")
        self.base, self.head, self.task = base, head, task
        self.labels = list(labels or [])
        self.tokenizer, self.max_length = tokenizer, max_length

    @property
    def device(self) -> torch.device:
        return self.base.embed_tokens.weight.device

    @property
    def reads_spelling(self) -> bool:
        """True when the head reads each word's spelling: its batches need collate's word_bytes."""
        return isinstance(self.head, TokenClassificationHead) and self.head.spelling is not None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        word_bytes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """In eval mode a padded batch runs packed (`core_model.packing`) when that saves positions:
        the same logits, less work on padding. `word_bytes` (collate's): each word's spelling, for
        a token-classification head that reads characters."""
        if self.head is None:
            return self.base(input_ids, attention_mask=attention_mask)
        causal = not getattr(self.head, "bidirectional", False)
        embeds_BTD = self.base.embed_tokens(input_ids)
        if isinstance(self.head, TokenClassificationHead):
            embeds_BTD = self.head.trunk_input(embeds_BTD, word_bytes)
        packing = None
        if attention_mask is not None and attention_mask.dim() == 2 and not self.training:
            packing = Packing.of(attention_mask)
        if packing is not None and packing.pays:
            hidden_BTD = packing.unpack(
                self.base.trunk(
                    inputs_embeds=packing.pack(embeds_BTD),
                    attention_mask=packing.mask(causal=causal),
                    position_ids=packing.position_ids_RW,
                    causal=causal,
                )
            )
        else:
            hidden_BTD = self.base.trunk(
                inputs_embeds=embeds_BTD, attention_mask=attention_mask, causal=causal
            )
        if isinstance(self.head, SequenceClassificationHead):
            return self.head(hidden_BTD, attention_mask)
        return self.head(hidden_BTD)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss per labelled position: cross-entropy (next-token for "lm"), or with a CRF
        head each sentence's negative log-likelihood over its words."""
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("word_bytes"))
        total, count = self.loss_sum(logits, batch["labels"])
        return total / count.clamp(min=1)

    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed loss over the labelled positions, and their count."""
        if not self.has_crf:
            return _loss_sum(self.task, logits, labels)
        scores_BWL, tags_BW, mask_BW = sentence_scores(logits.float(), labels, ignore_index=IGNORE_INDEX)
        return negative_log_likelihood(scores_BWL, tags_BW, mask_BW, self.transitions()).sum(), mask_BW.sum()

    @property
    def has_crf(self) -> bool:
        return isinstance(self.head, TokenClassificationHead) and self.head.crf

    def transitions(self) -> Transitions:
        """A CRF head's learned transition scores plus the BIO rules when the labels are BIO tags."""
        assert isinstance(self.head, TokenClassificationHead)
        learned = self.head.transitions()
        if not is_bio(self.labels):
            return learned
        rules = bio_transitions(self.labels).to(learned.pairs_LL.device)
        return learned.plus(rules)

    @torch.no_grad()
    def classify(self, texts: list[str], *, batch_size: int = 32) -> list[tuple[str, float]]:
        """(label, probability) of the most likely label for each text."""
        probs_NL = self.probabilities(texts, batch_size=batch_size)
        return [(self.labels[int(i)], float(p)) for p, i in zip(*probs_NL.max(-1), strict=True)]

    @torch.no_grad()
    def probabilities(self, texts: list[str], *, batch_size: int = 32) -> torch.Tensor:
        """Probabilities over `labels` for each text: float32 [N, L] on the CPU."""
        tokenizer = self._needs("sequence-classification")
        bos = tokenizer.bos_id is not None
        encoded = [Encoded(tokenizer.encode(t, add_bos=bos)[: self.max_length], 0) for t in texts]
        rows = [
            logits_BL.float().softmax(-1).cpu()
            for _, _, logits_BL in self.predict_batches(encoded, batch_size=batch_size)
        ]
        return torch.cat(rows) if rows else torch.zeros(0, len(self.labels))

    @torch.no_grad()
    def tag(self, words_list: list[list[str]], *, batch_size: int = 32) -> list[list[str]]:
        """One tag per word for each list of words (words cut off by max_length get "O")."""
        return [[tag for tag, _ in row] for row in self.tag_with_scores(words_list, batch_size=batch_size)]

    @torch.no_grad()
    def tag_with_scores(
        self, words_list: list[list[str]], *, batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """(tag, softmax probability) per word (see `decode_words`); a word cut off by max_length
        gets ("O", 1.0). Empty word lists are not run."""
        tokenizer = self._needs("token-classification")
        rows = [i for i, words in enumerate(words_list) if words]
        encoded = []
        for i in rows:
            ids, positions = encode_words(tokenizer, words_list[i], max_length=self.max_length)
            encoded.append(Encoded(ids, [IGNORE_INDEX] * len(ids), positions, words=words_list[i]))
        out: list[list[tuple[str, float]]] = [[] for _ in words_list]
        n = 0
        for chunk, _, logits_BTL in self.predict_batches(encoded, batch_size=batch_size):
            for decoded in self.decode_words(chunk, logits_BTL):
                out[rows[n]] = [(self.labels[i], p) for i, p in decoded]
                n += 1
        return out

    def _needs(self, task: str) -> Tokenizer:
        if self.task != task:
            raise ValueError(f"this is a {self.task!r} model; that helper needs a {task!r} model")
        if self.tokenizer is None:
            raise ValueError("this TaskModel has no tokenizer; pass tokenizer= to load_task_model")
        return self.tokenizer

    @torch.no_grad()
    def predict_batches(
        self, encoded: list[Encoded], *, batch_size: int
    ) -> Iterator[tuple[list[Encoded], dict[str, torch.Tensor], torch.Tensor]]:
        """(examples, collated batch, logits) per batch, in eval mode; the mode is restored after."""
        was_training = self.training
        if was_training:  # a mode switch walks every module: not on each serving call
            self.eval()
        pad_id = (self.tokenizer.pad_id if self.tokenizer else None) or 0
        try:
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                batch = collate(chunk, pad_id=pad_id, device=self.device, word_bytes=self.reads_spelling)
                yield chunk, batch, self(batch["input_ids"], batch["attention_mask"], batch.get("word_bytes"))
        finally:
            if was_training:
                self.train()

    def word_predictions(self, chunk: list[Encoded], logits_BTL: torch.Tensor) -> list[list[int]]:
        """Tag id per word (see `decode_words`)."""
        return [[i for i, _ in row] for row in self.decode_words(chunk, logits_BTL)]

    def decode_words(self, chunk: list[Encoded], logits_BTL: torch.Tensor) -> list[list[tuple[int, float]]]:
        """(tag id, its probability) per word, read at each word's first sub-token. With a CRF head
        each sentence is decoded as a whole (crf.viterbi) and the probability is the tag's
        marginal; else a BIO tag set is decoded as a whole sentence (tagging.bio_viterbi: no I-X
        without its B-X), any other word by word. Words cut off by max_length get "O" (else
        label 0) with probability 1."""
        fallback = self.labels.index("O") if "O" in self.labels else 0
        transitions = self.transitions().to("cpu") if self.has_crf else None
        scores_BTL = logits_BTL.float().cpu()
        if transitions is None:
            scores_BTL = scores_BTL.log_softmax(-1)
        bio = is_bio(self.labels)
        out = []
        for row, example in enumerate(chunk):
            positions = example.word_positions or []
            kept = [p for p in positions if p is not None]
            words_WL = scores_BTL[row, kept]
            if transitions is not None:
                best, probs_WL = viterbi(words_WL, transitions), marginals(words_WL, transitions)
            else:
                best = bio_viterbi(words_WL, self.labels) if bio else words_WL.argmax(-1).tolist()
                probs_WL = words_WL.exp()
            found = iter(zip(best, probs_WL[torch.arange(len(kept)), best].tolist(), strict=True))
            out.append([(fallback, 1.0) if p is None else next(found) for p in positions])
        return out


def _loss_sum(task: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over labelled positions, and their count."""
    if task == "lm":
        logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1
    flat_NL, labels_N = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
    total = F.cross_entropy(flat_NL, labels_N, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, (labels_N != IGNORE_INDEX).sum()


def _is_adapter_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key or key.startswith("head.")


def adapter_state(model: TaskModel) -> dict[str, torch.Tensor]:
    """Copies of the LoRA and head tensors only (names as in `model.state_dict()`)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if _is_adapter_key(k)}


@torch.no_grad()
def load_adapter_state(model: TaskModel, tensors: dict[str, torch.Tensor]) -> None:
    """Copy LoRA and head tensors into `model`; the names and shapes must be exactly its own."""
    own = {k: v for k, v in model.state_dict().items() if _is_adapter_key(k)}
    missing, unexpected = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(
            f"adapter state does not fit this model: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for key, target in own.items():
        if tuple(tensors[key].shape) != tuple(target.shape):
            raise ValueError(
                f"adapter state tensor {key} has shape {tuple(tensors[key].shape)}; "
                f"the model needs {tuple(target.shape)}"
            )
    for key, target in own.items():
        target.copy_(tensors[key])


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: TaskModel, examples: list[Encoded], *, batch_size: int = 32) -> dict[str, float]:
    """Dev metrics of `model.task` (metrics.SELECTION names the one that picks the best state)."""
    total_loss, count = 0.0, 0
    gold: list[int] = []
    predicted: list[int] = []
    words_pred: list[list[int]] = []
    for chunk, batch, logits in model.predict_batches(examples, batch_size=batch_size):
        loss_sum, labelled = model.loss_sum(logits, batch["labels"])
        total_loss, count = total_loss + float(loss_sum), count + int(labelled)
        if model.task == "sequence-classification":
            gold += [e.labels for e in chunk]  # type: ignore[misc]
            predicted += logits.argmax(-1).tolist()
        elif model.task == "token-classification":
            words_pred += model.word_predictions(chunk, logits)
    loss = total_loss / max(count, 1)
    if model.task == "lm":
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    if model.task == "sequence-classification":
        return {"loss": loss, "accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted)}
    words_gold = [e.word_labels or [] for e in examples]
    return {"loss": loss, **tagging_scores(words_gold, words_pred, model.labels)}


# ----------------------------------------------------------------------------- training


def train_adapter(
    base: MoEForCausalLM | str | Path,
    tokenizer: Tokenizer,
    *,
    task: str,
    train: list[dict[str, Any]],
    dev: list[dict[str, Any]],
    out_dir: str | Path,
    labels: list[str] | None = None,
    config: AdapterTrainingConfig | None = None,
    progress: bool = True,
) -> AdapterResult:
    """Train LoRA (+ head) on `train`, keep the best state on `dev`, write `out_dir`.

    NOTE: `base` is modified in place (LoRA injected, every base weight frozen), so no second
    copy of a large model is made; load a fresh base (`load_model`) for anything else. The
    global torch seed is set to `config.seed` (LoRA and head initialisation, dropout, order).
    `labels`: the label (or BIO tag) list, id order; default: the sorted labels seen in `train`.
    `progress=False` hides the tqdm bar.
    """
    config = config or AdapterTrainingConfig()
    started = time.monotonic()
    for name, examples in (("train", train), ("dev", dev)):
        if not examples:
            raise ValueError(f"train_adapter needs at least one {name} example")
        for n, example in enumerate(examples):
            try:
                check_example(task, example)
            except ValueError as error:
                raise ValueError(f"{name} example {n}: {error}") from None
    torch.manual_seed(config.seed)
    model = build_task_model(base, tokenizer, task=task, labels=labels or _labels(task, train), config=config)
    label_ids = {label: i for i, label in enumerate(model.labels)}
    train_set = _encode_all(tokenizer, task, train, label_ids, config, split="train")
    dev_set = _encode_all(tokenizer, task, dev, label_ids, config, split="dev")
    fit = _fit(model, train_set, dev_set, config=config, pad_id=tokenizer.pad_id or 0, progress=progress)
    metrics = {
        "task": task,
        "best": fit["best"],
        "history": fit["history"],
        "steps": fit["steps"],
        "stopped_early": fit["stopped_early"],
        "train_examples": len(train_set),
        "dev_examples": len(dev_set),
        "seconds": round(time.monotonic() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": asdict(config),
    }
    path = save_task_model(model, Path(out_dir), metrics, config=config, base_source=base)
    return AdapterResult(path, metrics, model.eval())


def build_task_model(
    base: MoEForCausalLM | str | Path,
    tokenizer: Tokenizer | None,
    *,
    task: str,
    labels: list[str],
    config: AdapterTrainingConfig,
) -> TaskModel:
    """A fresh TaskModel: LoRA (B = 0) injected into `base` in place, and a new head."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    base = base if isinstance(base, MoEForCausalLM) else load_model(base, dtype=torch.float32)
    inject_lora(base, targets=config.targets, rank=config.rank, alpha=config.alpha, dropout=config.dropout)
    head: Head | None = None
    if task != "lm":
        if len(labels) < 2:
            raise ValueError(f"{task} needs at least 2 labels, got {labels}")
        settings: dict[str, Any] = dict(hidden_size=base.config.hidden_size, num_labels=len(labels))
        settings["dropout"] = config.head_dropout
        if task == "sequence-classification":
            settings["pooling"] = config.pooling
        else:
            settings["bidirectional"] = config.bidirectional
            settings["characters"] = config.characters
            settings["crf"] = config.crf
        weight = base.embed_tokens.weight
        head = HEADS[task](**settings).to(device=weight.device, dtype=weight.dtype)
    return TaskModel(base, head, task=task, labels=labels, tokenizer=tokenizer, max_length=config.max_length)


def _labels(task: str, train: list[dict[str, Any]]) -> list[str]:
    if task == "sequence-classification":
        return sorted({e["label"] for e in train})
    if task == "token-classification":
        return sorted({tag for e in train for tag in e["tags"]})
    return []


def _encode_all(
    tokenizer: Tokenizer,
    task: str,
    examples: list[dict[str, Any]],
    label_ids: dict[str, int],
    config: AdapterTrainingConfig,
    *,
    split: str,
) -> list[Encoded]:
    out = []
    for n, example in enumerate(examples):
        unknown = {example["label"]} if task == "sequence-classification" else set(example.get("tags", []))
        if unknown - label_ids.keys():
            raise ValueError(
                f"{split} example {n}: label(s) {sorted(unknown - label_ids.keys())} not in {list(label_ids)}"
            )
        encoded = encode_example(tokenizer, task, example, label_ids=label_ids, max_length=config.max_length)
        if task == "lm" and sum(label != IGNORE_INDEX for label in encoded.labels[1:]) == 0:  # type: ignore[index]
            log.warning("%s example %d has no supervised token within max_length; skipped", split, n)
            continue
        out.append(encoded)
    if not out:
        raise ValueError(f"no {split} example keeps a supervised token within max_length={config.max_length}")
    return out


# Serving steps (bfloat16) of up to this many tokens run every expert: about 8 short messages, packed.
DENSE_EXPERTS_UP_TO_TOKENS = 192
LENGTH_GROUP_BATCHES = 32  # batches per group of examples sorted by length (see _batches)


def _batches(examples: list[Encoded], config: AdapterTrainingConfig) -> Iterator[list[Encoded]]:
    """`epochs` passes over the examples, each in a fresh seeded order, with examples of like
    length batched together: the shuffled examples are cut into groups of LENGTH_GROUP_BATCHES
    batches, each group sorted by length and cut into batches, and the batches shuffled. Random
    batches pad to their longest example (NCBI-disease sentences: 2.0x the real tokens); grouped
    ones pad little, and still mix examples from the whole set (as transformers' group_by_length)."""
    generator = torch.Generator().manual_seed(config.seed)
    size, group = config.batch_size, config.batch_size * LENGTH_GROUP_BATCHES
    for _ in range(config.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        batches = []
        for start in range(0, len(order), group):
            by_length = sorted(order[start : start + group], key=lambda i: len(examples[i].input_ids))
            batches += [by_length[i : i + size] for i in range(0, len(by_length), size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield [examples[i] for i in batches[b]]


def _fit(
    model: TaskModel,
    train_set: list[Encoded],
    dev_set: list[Encoded],
    *,
    config: AdapterTrainingConfig,
    pad_id: int,
    progress: bool,
) -> dict[str, Any]:
    """AdamW + warm-up/cosine + clipping; evaluate every `eval_every` steps, keep the best state,
    stop after `patience` evaluations without improvement, and restore the best."""
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = steps_per_epoch * config.epochs
    eval_every = config.eval_every or steps_per_epoch
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    schedule = warmup_cosine(optimizer, warmup_steps=round(config.warmup_ratio * total), total_steps=total)
    trainable = [p for p in model.parameters() if p.requires_grad]
    metric = SELECTION[model.task][0]  # shown on the progress bar
    best = {"step": 0, "epoch": 0.0, **evaluate(model, dev_set, batch_size=config.batch_size)}
    history, best_state, waited, step = [best], adapter_state(model), 0, 0
    bar = tqdm(total=total, disable=not progress, desc=f"adapter ({model.task})", leave=False)
    try:
        for chunk in _batches(train_set, config):
            loss = _step(model, chunk, optimizer, schedule, trainable, config=config, pad_id=pad_id)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", best=f"{best[metric]:.4f}")
            if step % eval_every and step != total:
                continue
            row = {"step": step, "epoch": round(step / steps_per_epoch, 3)}
            row.update(evaluate(model, dev_set, batch_size=config.batch_size))
            history.append(row)
            log.info("step %d: dev %s", step, {k: round(v, 4) for k, v in row.items()})
            if is_better(model.task, row, best):
                best, best_state, waited = row, adapter_state(model), 0
            else:
                waited += 1
                if config.patience and waited >= config.patience:
                    break
    finally:
        bar.close()
    load_adapter_state(model, best_state)
    return {"best": best, "history": history, "steps": step, "stopped_early": step < total}


def _step(
    model: TaskModel,
    chunk: list[Encoded],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    trainable: list[nn.Parameter],
    *,
    config: AdapterTrainingConfig,
    pad_id: int,
    anchor: list[torch.Tensor] | None = None,
    proximal_mu: float = 0.0,
) -> torch.Tensor:
    """One optimiser step on `chunk`; with `anchor` (the trainable tensors' starting values) the
    loss adds FedProx's proximal term mu / 2 * ||w - anchor||^2. Returns the task loss."""
    model.train()
    loss = model.loss(collate(chunk, pad_id=pad_id, device=model.device, word_bytes=model.reads_spelling))
    objective = loss
    if anchor is not None and proximal_mu > 0:
        drift = sum(((p - a) ** 2).sum() for p, a in zip(trainable, anchor, strict=True))
        objective = loss + 0.5 * proximal_mu * drift
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    clip_gradients(trainable, config.max_grad_norm)
    optimizer.step()
    schedule.step()
    return loss


def fine_tune(
    model: TaskModel,
    examples: list[dict[str, Any]],
    *,
    config: AdapterTrainingConfig,
    proximal_mu: float = 0.0,
    progress: bool = False,
) -> dict[str, float]:
    """Continue training `model` (LoRA + head as they are) on `examples` for `config.epochs`,
    with a fresh AdamW and warm-up/cosine schedule, no dev set and no early stopping: one
    federated site's local training. `proximal_mu` > 0 adds FedProx's proximal term toward the
    state the call started from. Returns {"loss": mean task loss, "steps", "examples"}."""
    if not examples:
        raise ValueError("fine_tune needs at least one example")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("this TaskModel has no tokenizer; pass tokenizer= when building it")
    label_ids = {label: i for i, label in enumerate(model.labels)}
    encoded = _encode_all(tokenizer, model.task, examples, label_ids, config, split="train")
    torch.manual_seed(config.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in trainable] if proximal_mu > 0 else None
    total = math.ceil(len(encoded) / config.batch_size) * config.epochs
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    schedule = warmup_cosine(optimizer, warmup_steps=round(config.warmup_ratio * total), total_steps=total)
    losses = []
    for chunk in tqdm(_batches(encoded, config), total=total, disable=not progress, leave=False):
        loss = _step(
            model,
            chunk,
            optimizer,
            schedule,
            trainable,
            config=config,
            pad_id=tokenizer.pad_id or 0,
            anchor=anchor,
            proximal_mu=proximal_mu,
        )
        losses.append(loss.item())
    model.eval()
    return {"loss": sum(losses) / len(losses), "steps": len(losses), "examples": len(encoded)}


def evaluate_examples(
    model: TaskModel, examples: list[dict[str, Any]], *, batch_size: int = 32
) -> dict[str, float]:
    """`evaluate` on raw examples (encoded with the model's tokenizer, labels and max_length)."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("this TaskModel has no tokenizer; pass tokenizer= when building it")
    label_ids = {label: i for i, label in enumerate(model.labels)}
    config = AdapterTrainingConfig(max_length=model.max_length)
    encoded = _encode_all(tokenizer, model.task, examples, label_ids, config, split="evaluation")
    return evaluate(model, encoded, batch_size=batch_size)


# ----------------------------------------------------------------------------- files


def save_task_model(
    model: TaskModel,
    out_dir: Path,
    metrics: dict[str, Any],
    *,
    config: AdapterTrainingConfig,
    base_source: Any,
) -> Path:
    """Write `out_dir` as `train_adapter` does: the PEFT adapter, the head files, metrics.json.
    `base_source`: the base's name or path (recorded as PEFT's base_model_name_or_path), or the
    model object (recorded as nothing)."""
    save_adapter(
        out_dir,
        lora_weights(model.base),
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        task_type="CAUSAL_LM" if model.task == "lm" else None,
        base_model=None if isinstance(base_source, MoEForCausalLM) else str(base_source),
    )
    for stale in (HEAD_WEIGHTS, HEAD_CONFIG, LABELS_FILE):  # from an earlier run into the same directory
        (out_dir / stale).unlink(missing_ok=True)
    if model.head is not None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
            str(out_dir / HEAD_WEIGHTS),
        )
        head_config = {
            "task": model.task,
            "type": type(model.head).__name__,
            "config": model.head.config,
            "max_length": model.max_length,
        }
        _write_json(out_dir / HEAD_CONFIG, head_config)
        _write_json(out_dir / LABELS_FILE, model.labels)
    _write_json(out_dir / METRICS_FILE, metrics)
    return out_dir


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@torch.no_grad()
def load_task_model(
    base: MoEForCausalLM | str | Path, adapter_dir: str | Path, *, tokenizer: Tokenizer | None = None
) -> TaskModel:
    """Rebuild LoRA (and head) from a directory `train_adapter` wrote, on `base` (modified in place)."""
    directory = Path(adapter_dir)
    base = base if isinstance(base, MoEForCausalLM) else load_model(base, dtype=torch.float32)
    if lora_layers(base):
        raise ValueError("this base already holds LoRA layers; load a fresh base model for each adapter")
    adapter = read_adapter(directory.name, directory, model=base)  # checks names, shapes, refused targets
    raw = json.loads((directory / CONFIG_FILE).read_text())
    rank, dropout = int(raw["r"]), float(raw.get("lora_dropout") or 0.0)  # dropout: for further training
    alpha = float(raw.get("lora_alpha", rank))
    inject_lora(base, targets=list(adapter.weights), rank=rank, alpha=alpha, dropout=dropout)
    layers = lora_layers(base)
    for name, (a_rI, b_Or) in adapter.weights.items():
        layers[name].lora_A.weight.copy_(a_rI)
        layers[name].lora_B.weight.copy_(b_Or)
        layers[name].scale = adapter.scale  # also right for rsLoRA adapters written elsewhere
    head, task, labels, max_length = None, "lm", None, 128
    if (directory / HEAD_CONFIG).exists():
        head_config = json.loads((directory / HEAD_CONFIG).read_text())
        task, max_length = head_config["task"], int(head_config.get("max_length", max_length))
        head = HEADS[task].from_config(head_config["config"])
        head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS)))
        weight = base.embed_tokens.weight
        head = head.to(device=weight.device, dtype=weight.dtype)
        labels = json.loads((directory / LABELS_FILE).read_text())
    model = TaskModel(base, head, task=task, labels=labels, tokenizer=tokenizer, max_length=max_length)
    return model.eval()


def adapter_base(adapter_dir: str | Path) -> str:
    """The base an adapter directory names (PEFT's `base_model_name_or_path`), else "embedded"."""
    config = json.loads((Path(adapter_dir) / CONFIG_FILE).read_text())
    return config.get("base_model_name_or_path") or "embedded"


def load_for_inference(
    adapter_dir: str | Path,
    *,
    base: MoEForCausalLM | str | None = None,
    tokenizer: Tokenizer | None = None,
    dtype: torch.dtype | None = None,
) -> TaskModel:
    """The adapter on a fresh float32 base (`base`, default the one it names) with the base's
    tokenizer, its LoRA merged into the weights (no LoRA matmuls left), in eval mode: for serving.
    `dtype`: the weights' dtype once merged (None: the base's; see checkpoint.encoder_dtype). In
    bfloat16, steps of up to DENSE_EXPERTS_UP_TO_TOKENS tokens run every expert (use_dense_experts)."""
    directory = Path(adapter_dir)
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no adapter at {directory}: {CONFIG_FILE} is missing")
    base = base if base is not None else adapter_base(directory)
    if tokenizer is None:
        if isinstance(base, MoEForCausalLM):
            raise ValueError("pass tokenizer= with a base model object")
        tokenizer = load_tokenizer(base)
    model = load_task_model(base, directory, tokenizer=tokenizer)
    merge_lora(model.base)
    if dtype is not None:
        model.to(dtype)
    if dtype == torch.bfloat16:
        use_dense_experts(model, up_to_tokens=DENSE_EXPERTS_UP_TO_TOKENS)
    return model.eval()
