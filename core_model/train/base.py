"""Pre-train a base model from a corpus and export it as a checkpoint with its model card.

    summary = train_base("embedded", config=PretrainConfig(steps=2000), run_dir="runs/embedded",
                         export_dir="core_model/assets/embedded")

With no `data` files the corpus is the suite's own (`corpus.pretraining_documents`): the Python
standard library on this machine plus the licensed customer-support and biomedical datasets,
with some standard-library files kept out for the held-out loss. `dense=True` trains the dense
baseline instead: every layer a SwiGLU at least as wide as the MoE layers' active experts.

The export holds config.json, model.safetensors (bfloat16; routers float32), the tokenizer,
`training_summary.json` and README.md, the model card (see `model_card.py`).
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import cast_weights, save_model
from ..config import MoEConfig
from ..model import MoEForCausalLM
from ..tokenizer import Tokenizer, load_tokenizer
from .data import PackedSequences, pack_documents
from .distributed import DistributedContext
from .pretrain import PretrainConfig, pretrain, unigram_loss

SUMMARY_FILE = "training_summary.json"
TEXT_SUFFIXES = (".py", ".txt", ".md", ".rst", ".json", ".jsonl", ".csv", ".tsv")


def dense_baseline(config: MoEConfig) -> MoEConfig:
    """Every layer dense, each SwiGLU as wide as the widest of: the model's dense layers, and the
    routed plus shared experts one token activates in a MoE layer (so the dense model computes
    at least as much per token as the MoE)."""
    active = (config.num_experts_per_tok + (config.n_shared_experts or 0)) * config.moe_intermediate_size
    return config.replace(
        first_k_dense_replace=config.num_hidden_layers,
        intermediate_size=max(config.intermediate_size, active),
    )


def read_text_files(paths: list[Path]) -> list[tuple[str, str]]:
    """(label, text) for each file, and each text file under each directory, in sorted order."""
    documents = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]
        for file in files:
            text = file.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                documents.append((f"file:{file.name}", text))
    if not documents:
        raise ValueError(f"no text in {', '.join(map(str, paths))}")
    return documents


def suite_sequences(tokenizer: Tokenizer, *, seq_len: int) -> tuple[PackedSequences, PackedSequences]:
    """The suite corpus (train) and its held-out standard-library files, packed."""
    from .corpus import pretraining_documents

    train_docs, held_docs = pretraining_documents()
    return (
        PackedSequences(pack_documents((t for _, t in train_docs), tokenizer), seq_len=seq_len),
        PackedSequences(pack_documents((t for _, t in held_docs), tokenizer), seq_len=seq_len),
    )


def train_base(
    preset: str,
    *,
    config: PretrainConfig,
    run_dir: str | Path,
    export_dir: str | Path | None = None,
    tokenizer: str | Path | Tokenizer = "embedded",
    data: list[Path] | None = None,
    held_out: list[Path] | None = None,
    dense: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Builds the corpus, trains a fresh model of `preset`, exports it; returns the summary."""
    context = DistributedContext.from_environment()
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    if data:
        train_docs = read_text_files(data)
        held_docs = read_text_files(held_out) if held_out else []
    else:
        from .corpus import pretraining_documents

        train_docs, held_docs = pretraining_documents()
    model_config = MoEConfig.preset(preset)
    if dense:
        model_config = dense_baseline(model_config)
    if model_config.vocab_size < tok.vocab_size:
        raise ValueError(
            f"preset {preset!r} has vocab_size {model_config.vocab_size}; "
            f"the tokenizer needs {tok.vocab_size}"
        )
    train_tokens = pack_documents((text for _, text in train_docs), tok)
    held_tokens = pack_documents((text for _, text in held_docs), tok) if held_docs else None
    train_data = PackedSequences(train_tokens, seq_len=config.seq_len)
    held_data = PackedSequences(held_tokens, seq_len=config.seq_len) if held_tokens is not None else None
    torch.manual_seed(config.seed)
    model = MoEForCausalLM(model_config)
    model.init_weights(torch.Generator().manual_seed(config.seed))
    result = pretrain(
        model, train_data, held_data, config, run_dir=run_dir, context=context, progress=progress
    )
    load = result.last("load")
    held = result.last("eval")
    summary: dict[str, Any] = {
        "preset": preset,
        "dense": dense,
        "parameters": model_config.num_parameters(),
        "active_parameters": model_config.num_parameters(active=True),
        "config": asdict(config),
        "processes": context.world_size,
        "python": platform.python_version(),
        "device": str(context.device),
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "train_seconds": round(result.train_seconds, 1),
        "tokens_per_second": round(result.tokens_seen / max(result.train_seconds, 1e-9), 1),
        "epochs": round(train_data.epoch_of(step=result.steps, batch_size=config.batch_size), 3),
        "held_out_loss": held["held_out_loss"] if held else None,
        "unigram_held_out_loss": (
            unigram_loss(train_tokens, held_tokens, vocab_size=model_config.vocab_size)
            if held_tokens is not None
            else None
        ),
        "final_train_loss": result.last("train")["loss"],  # type: ignore[index]
        "load_balance": load and {k: load[k] for k in ("max_over_mean", "mean_max_over_mean", "layers")},
        "data": _data_summary(train_docs, held_docs, tok, train_tokens, held_tokens),
        "loss_curve": [
            {k: r[k] for k in ("step", "loss", "tokens_seen")} for r in result.history if r["type"] == "train"
        ],
        "held_out_curve": [r for r in result.history if r["type"] == "eval"],
    }
    if context.is_main:
        Path(run_dir, SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        if export_dir is not None:
            export(model, tok, summary, export_dir)
    context.barrier()
    context.close()
    return summary


def export(
    model: MoEForCausalLM, tokenizer: Tokenizer, summary: dict[str, Any], directory: str | Path
) -> Path:
    """The shippable checkpoint: bfloat16 weights (routers float32), tokenizer, summary, card."""
    from .model_card import write_model_card

    directory = Path(directory)
    model = model.cpu().eval()
    cast_weights(model, torch.bfloat16)
    save_model(model, directory)
    tokenizer.save(directory)
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    write_model_card(directory)
    return directory


def _data_summary(
    train_docs: list[tuple[str, str]],
    held_docs: list[tuple[str, str]],
    tokenizer: Tokenizer,
    train_tokens: torch.Tensor,
    held_tokens: torch.Tensor | None,
) -> dict[str, Any]:
    documents: Counter[str] = Counter()
    characters: Counter[str] = Counter()
    for label, text in train_docs:
        source = label.split(":", 1)[0]
        documents[source] += 1
        characters[source] += len(text)
    return {
        "train_sources": {
            s: {"documents": documents[s], "characters": characters[s]} for s in sorted(documents)
        },
        "train_tokens": int(train_tokens.numel()),
        "held_out_documents": [label for label, _ in held_docs],
        "held_out_tokens": int(held_tokens.numel()) if held_tokens is not None else 0,
        "tokenizer_vocab": tokenizer.vocab_size,
    }
