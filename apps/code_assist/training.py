"""Training the code adapter: fill-in-the-middle on the Python sources of permissively licensed
packages installed here (`corpus.py`), through the suite's one adapter-training loop.

    verticals code train --out apps/code_assist/assets/fim                  # the shipped adapter
    verticals code train --examples 200 --dev-examples 40 --out /tmp/fim    # a quick CPU check

The dev examples come from files kept aside by a stable hash (`corpus.is_dev`) and pick the best
state; the held-out packages (`corpus.HELD_OUT_PACKAGES`) are never read here. The adapter's
directory gets a card (README.md) naming the packages, their versions and licences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core_model import load_tokenizer
from core_model.fim import fim_template
from core_model.train.adapters import AdapterResult, AdapterTrainingConfig, train_adapter


@dataclass(frozen=True)
class FimRun:
    out: Path
    base: str = "embedded"
    examples: int = 8000
    dev_examples: int = 300
    epochs: int = 1
    lr: float = 2e-3
    rank: int = 16
    max_length: int = 512
    seed: int = 1  # the shipped adapter's
    progress: bool = True


def train_fim(run: FimRun) -> AdapterResult:
    """Cut the examples, train LoRA on them (loss on the middle only), write the adapter and its card."""
    # Imported here: the corpus needs tree-sitter (the code-assist extra); `verticals` itself does not.
    from .corpus import HELD_OUT_PACKAGES, TRAINING_PACKAGES, fim_examples, licences

    if set(TRAINING_PACKAGES) & set(HELD_OUT_PACKAGES):
        raise ValueError("a held-out package is also a training package")
    sources = licences(TRAINING_PACKAGES)
    train = fim_examples(TRAINING_PACKAGES, count=run.examples, seed=run.seed, progress=run.progress)
    dev = fim_examples(
        TRAINING_PACKAGES, count=run.dev_examples, seed=run.seed + 1, split="dev", progress=run.progress
    )
    config = AdapterTrainingConfig(
        rank=run.rank,
        alpha=2.0 * run.rank,
        lr=run.lr,
        epochs=run.epochs,
        batch_size=16,
        max_length=run.max_length,
        eval_every=max(1, run.examples // 16 // 8),
        patience=3,
        seed=run.seed,
    )
    # The base by name: train_adapter loads it in float32 (the shipped weights are bfloat16).
    result = train_adapter(
        run.base,
        load_tokenizer(run.base),
        task="lm",
        train=train,
        dev=dev,
        out_dir=run.out,
        config=config,
        progress=run.progress,
    )
    write_card(run, result.metrics, sources)
    return result


def write_card(run: FimRun, metrics: dict, sources: dict[str, str]) -> None:
    """The adapter's README.md: what it was trained on, how long, and its best dev loss."""
    from .corpus import CONTEXT_SHARE, HELD_OUT_PACKAGES

    order = fim_template(load_tokenizer(run.base)).order.upper()
    lines = [
        "# The code adapter (fill-in-the-middle)",
        "",
        f"LoRA (rank {run.rank}) on `{run.base}`, trained by `verticals code train` on "
        f"{metrics['train_examples']:,} fill-in-the-middle examples ({order} order, loss on the "
        f"middle only; of {run.examples:,} cut, those whose middle starts past {run.max_length} tokens "
        f"are skipped) for {run.epochs} epoch(s), {metrics['steps']} steps in "
        f"{metrics['seconds'] / 60:.0f} min on the CPU. {CONTEXT_SHARE:.0%} of the examples carry "
        "snippets retrieved from the rest of their package, as served. Best dev loss "
        f"{metrics['best']['loss']:.3f} nats per middle token on {metrics['dev_examples']} examples "
        "from files kept aside.",
        "",
        "## Training text",
        "",
        "Python sources of these installed packages (tests and vendored code left out); only the learned",
        "weights are shipped here, no source text:",
        "",
        *[f"- `{name}`: {source}" for name, source in sources.items()],
        "",
        f"Held out for the benchmark, never trained on: {', '.join(f'`{p}`' for p in HELD_OUT_PACKAGES)}.",
        "",
    ]
    (Path(run.out) / "README.md").write_text("\n".join(lines), encoding="utf-8")
