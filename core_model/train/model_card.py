"""The embedded model's card: README.md rendered from `training_summary.json` (and, when the
ablation benchmark has been run, `ablation.json` beside it).

    write_model_card(Path("core_model/assets/embedded"))

Every figure in the card comes from those files; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUMMARY_FILE, ABLATION_FILE, CARD_FILE = "training_summary.json", "ablation.json", "README.md"


def write_model_card(directory: Path) -> Path:
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    ablation_path = directory / ABLATION_FILE
    ablation = json.loads(ablation_path.read_text()) if ablation_path.exists() else None
    card = directory / CARD_FILE
    card.write_text(render_model_card(summary, ablation))
    return card


def render_model_card(summary: dict[str, Any], ablation: dict[str, Any] | None = None) -> str:
    data, cfg = summary["data"], summary["config"]
    balance = summary.get("load_balance") or {}
    lines = [
        "# The embedded default model",
        "",
        'What `load_model("embedded")` and `load_tokenizer("embedded")` return when no checkpoint is',
        "given: a DeepSeek-V3-shaped Mixture-of-Experts model trained from nothing by this project's",
        "own code (`verticals train base --preset embedded`), small enough to ship in the repository.",
        "",
        "## Model",
        "",
        f"- {summary['parameters'] / 1e6:.1f} M parameters, "
        f"{summary['active_parameters'] / 1e6:.1f} M active per token; MLA attention, DeepSeekMoE",
        "  feed-forward (see `config.json`).",
        "- Weights in bfloat16 (routers in float32), `model.safetensors` in the Hugging Face layout: it",
        "  also loads in transformers' `DeepseekV3ForCausalLM`.",
        "- Byte-level BPE tokenizer, 8,192 tokens, trained on the standard library's Python sources;",
        "  special tokens at ids 0-9 (bos, eos, pad, chat roles, end of turn, fill-in-the-middle).",
        "",
        "## Training",
        "",
        f"- {summary['steps']:,} optimiser steps of {cfg['batch_size']} x {cfg['seq_len']} tokens: "
        f"{summary['tokens_seen']:,} tokens seen ({summary['epochs']:.2f} epochs of the corpus), "
        f"in {summary['train_seconds'] / 60:.0f} min on {summary['device']} "
        f"({summary['processes']} process(es), {summary['tokens_per_second']:,.0f} tokens/s).",
        f"- AdamW (lr {cfg['lr']}, weight decay {cfg['weight_decay']}), {cfg['warmup_steps']} warm-up "
        f"steps then cosine decay to {cfg['min_lr_ratio']} x lr, gradient clipping at "
        f"{cfg['max_grad_norm']}; auxiliary-loss-free load balancing with bias update rate "
        f"{cfg['bias_update_rate']}.",
        "",
        "## Data",
        "",
        "| source | documents | characters |",
        "| --- | ---: | ---: |",
        *(
            f"| {name} | {s['documents']:,} | {s['characters']:,} |"
            for name, s in data["train_sources"].items()
        ),
        "",
        f"{data['train_tokens']:,} training tokens. `stdlib` is the Python {_python(summary)} standard",
        "library found on the training machine (PSF License; test folders left out). The datasets, training",
        "splits only, are read from `../shared/datasets` and credited to their authors: banking77",
        "(CC BY 4.0), NLU++ banking folds 0-9 (CC BY 4.0), SGD bank dialogues (CC BY-SA 4.0), ABCD",
        "sample dialogues and guidelines (MIT), NCBI disease corpus training sentences (CC BY 4.0).",
        "No text of any of them is shipped here; only the learned weights.",
        "",
        "## Held-out loss",
        "",
        f"On {len(data['held_out_documents'])} standard-library files never trained on "
        f"({data['held_out_tokens']:,} tokens):",
        "",
        "| model | loss (nats/token) | perplexity |",
        "| --- | ---: | ---: |",
        _loss_row("this model", summary["held_out_loss"]),
        _loss_row(
            "unigram baseline (token frequencies of the training data)", summary["unigram_held_out_loss"]
        ),
        "",
        "Held-out files: "
        + ", ".join(f"`{d.removeprefix('stdlib:')}`" for d in data["held_out_documents"])
        + ".",
        "",
        "## Expert load balance",
        "",
        f"Over the last {cfg['log_every']} steps, max/mean tokens per routed expert, worst layer "
        f"{balance.get('max_over_mean', float('nan')):.2f}, mean over layers "
        f"{balance.get('mean_max_over_mean', float('nan')):.2f} (1.0 is perfect balance).",
        "",
    ]
    if ablation:
        lines += _ablation_section(ablation)
    return "\n".join(lines)


def _ablation_section(ablation: dict[str, Any]) -> list[str]:
    rows = ablation["runs"]
    lines = [
        "## Ablation: bias updates and a dense model",
        "",
        f"`benchmarks/pretrain_ablation.py`: three runs of {ablation['steps']} steps on the same data and",
        "schedule. The dense model has every layer a SwiGLU at least as wide as a MoE layer's active",
        "experts (so it computes at least as much per token).",
        "",
        "| run | parameters (active) | held-out loss | max/mean expert load, worst layer | tokens/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, run in rows.items():
        load = run.get("load_balance")
        load_text = f"{load['max_over_mean']:.2f}" if load else "n/a"
        lines.append(
            f"| {name} | {run['parameters'] / 1e6:.1f} M ({run['active_parameters'] / 1e6:.1f} M) | "
            f"{run['held_out_loss']:.3f} | {load_text} | {run['tokens_per_second']:,.0f} |"
        )
    return [*lines, ""]


def _loss_row(name: str, loss: float | None) -> str:
    if loss is None:
        return f"| {name} | n/a | n/a |"
    return f"| {name} | {loss:.3f} | {math.exp(loss):.1f} |"


def _python(summary: dict[str, Any]) -> str:
    return summary.get("python", "3")
