"""Continual learning: a trained fraud model fine-tuned on the days whose labels have arrived since
it last learned, read from the transaction store, and saved again with those days in its card.

    store = TransactionStore("sqlite:///runs/finance.db")
    record = update_model(model_dir="runs/finance/model", store=store)   # through the newest - 7 days
    record = update_model(model_dir=..., store=store, through=date(2018, 9, 16), days=7)
    plan = plan_update(card, oldest=..., newest=..., through=None, days=None)   # which days, which labels
    replace_model(model, "runs/finance/model", metrics=card["metrics"], updates=[...])

Which days. Labels arrive late (a chargeback takes up to DELAY_DAYS days), so a day is labelled
once DELAY_DAYS days have passed: by default the update runs through the day of the newest stored
transaction minus DELAY_DAYS. It starts the day after the last day the model learned from: its
card's last `updates` entry, else the end of its training block (`metrics.blocks.train`), else the
first stored day; `days` keeps only the last N of them.

Which labels. Those that had arrived by the cutoff: the end of the last day plus DELAY_DAYS, and
never after the newest stored transaction (the store's clock, which is the data's time during a
replay). A transaction of those days without a label is taken as genuine: no chargeback came.
NOTE: a label counts from its `arrived_at`; one posted during a replay of old data with the wall
clock's time is after the cutoff and is not read.

Which rows. A transaction tuned on reads its card's earlier transactions (and, where the store
holds no features for it, its customer's and terminal's windows), so the CONTEXT_DAYS days before
the first day are read too; rows keep the features they were scored with (`scoring.model_inputs`).

Saving. The new model is written to a temporary folder beside DIR, then DIR is renamed to
DIR.previous (the version before; an older .previous is removed) and the temporary folder to DIR:
a reader finds the old model or the new one whole, never a mix (for the instant between the two
renames, none). The folder holds the scoring pass's ONNX export too (`export.py`), so a scorer
serving from it swaps models without exporting one. config.json keeps the training `metrics`
and gains one `updates` entry per update.

Not the HTTP API (a running `verticals serve` loads the replaced model before its next scoring
pass, keeping its history; for the instant between the renames it keeps the model it had) and not
the training loop (`training.fine_tune`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .export import ONNX_FILE, export_onnx
from .features import DELAY_DAYS
from .model import CARD, WEIGHTS, FraudModel, load_fraud_model, save_fraud_model
from .scoring import TERMINAL_DAYS, model_inputs
from .store import TransactionStore
from .training import FINE_TUNING, Examples, TrainingConfig, evaluation_loss, fine_tune

CONTEXT_DAYS = TERMINAL_DAYS  # the widest window a transaction's features read (30 days + the delay)
PREVIOUS = ".previous"  # DIR's version before the last update lives in DIR.previous


class UpdateError(ValueError):
    """An update that cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class UpdatePlan:
    """Fine-tune on the transactions of first_day..last_day (UTC dates, inclusive), with the labels
    that had arrived by `labels_known_at`."""

    first_day: date
    last_day: date
    labels_known_at: datetime  # aware UTC

    @property
    def since(self) -> datetime:
        return _midnight(self.first_day)

    @property
    def until(self) -> datetime:
        return _midnight(self.last_day + timedelta(days=1))

    def days(self) -> str:
        return f"{self.first_day}..{self.last_day}"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def learned_through(card: dict[str, Any]) -> date | None:
    """The last day whose labels the model of `card` learned from, if the card says."""
    if updates := card.get("updates"):
        return date.fromisoformat(updates[-1]["last_day"])
    train = card.get("metrics", {}).get("blocks", {}).get("train", "")
    return date.fromisoformat(train.split("..")[1]) if ".." in train else None


def plan_update(
    card: dict[str, Any], *, oldest: datetime, newest: datetime, through: date | None, days: int | None
) -> UpdatePlan:
    """The days to fine-tune on and the label cutoff (module docstring), for a store whose
    transactions run from `oldest` to `newest` (aware UTC), or an UpdateError saying why none."""
    labelled = (newest - timedelta(days=DELAY_DAYS)).date()
    last = through or labelled
    if last > labelled:
        raise UpdateError(
            f"the labels of {last} have not all arrived: the newest transaction is of {newest:%Y-%m-%d %H:%M}"
            f" and labels take {DELAY_DAYS} days (--through {labelled} at the latest)"
        )
    first = oldest.date()
    if (seen := learned_through(card)) is not None:
        first = max(first, seen + timedelta(days=1))
    if days is not None:
        first = max(first, last - timedelta(days=days - 1))
    if first > last:
        learned = (
            f"the model learned from the days through {seen}" if seen else f"transactions start on {first}"
        )
        raise UpdateError(f"no newly labelled days: {learned}, and labels have arrived through {last}")
    cutoff = min(_midnight(last + timedelta(days=1)) + timedelta(days=DELAY_DAYS), newest)
    return UpdatePlan(first, last, cutoff)


def update_rows(store: TransactionStore, plan: UpdatePlan) -> tuple[pd.DataFrame, np.ndarray]:
    """The stored transactions from CONTEXT_DAYS before `plan.first_day` through its last day, with
    labels as known at the cutoff, and the positions of those to fine-tune on (the plan's days)."""
    frame = store.transactions(
        since=plan.since - timedelta(days=CONTEXT_DAYS),
        until=plan.until,
        labels_known_at=plan.labels_known_at,
    )
    tuned = np.flatnonzero(frame["timestamp"].to_numpy() >= np.datetime64(plan.since.replace(tzinfo=None)))
    return frame, tuned


def update_model(
    *,
    model_dir: str | Path,
    store: TransactionStore,
    through: date | None = None,
    days: int | None = None,
    training: TrainingConfig = FINE_TUNING,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tunes the model in `model_dir` on the newly labelled days of `store` and saves it in
    its place (module docstring); returns the `updates` entry recorded in its card."""
    model, card = load_fraud_model(require_model(model_dir))
    if (stored := store.time_range()) is None:
        raise UpdateError("no transactions in the database: nothing is labelled yet")
    plan = plan_update(card, oldest=stored[0], newest=stored[1], through=through, days=days)
    frame, tuned = update_rows(store, plan)
    rows = frame.iloc[tuned]
    if not rows["labelled"].any():
        raise UpdateError(
            f"no labelled transactions in {plan.days()}: no label of theirs had arrived by "
            f"{plan.labels_known_at:%Y-%m-%d %H:%M} ({len(rows)} transactions)"
        )
    _, examples = model_inputs(model, frame)
    examples = examples.take(tuned)
    updated, loss_before, loss_after = _fine_tune(model, examples, training=training, progress=progress)
    record = {
        "first_day": str(plan.first_day), "last_day": str(plan.last_day),
        "labels_known_at": plan.labels_known_at.isoformat(), "transactions": len(rows),
        "labelled": int(rows["labelled"].sum()), "frauds": int(rows["fraud"].sum()),
        "epochs": training.epochs, "lr": training.lr, "loss_before": round(loss_before, 5),
        "loss_after": round(loss_after, 5), "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    replace_model(
        updated, model_dir, metrics=card.get("metrics", {}), updates=[*card.get("updates", []), record]
    )
    return record


def require_model(model_dir: str | Path) -> Path:
    """`model_dir`, or an UpdateError when it holds no model."""
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS).is_file():
        raise UpdateError(
            f"no fraud model at {model_dir}: train one with `verticals finance train --out {model_dir}` "
            "(or copy the shipped one, apps/finance_risk/assets/model)"
        )
    return model_dir


def _fine_tune(
    model: FraudModel, examples: Examples, *, training: TrainingConfig, progress: bool
) -> tuple[FraudModel, float, float]:
    """The tuned model and the training loss on `examples` before and after."""
    before = evaluation_loss(model, examples, fraud_weight=training.fraud_weight)
    tuned, _ = fine_tune(model, examples, training=training, progress=progress)
    return tuned, before, evaluation_loss(tuned, examples, fraud_weight=training.fraud_weight)


def replace_model(
    model: FraudModel,
    directory: str | Path,
    *,
    metrics: dict[str, Any],
    updates: list[dict[str, Any]] | None = None,
    keep_previous: bool = True,
) -> Path:
    """`model` saved as `directory`, whose earlier content (if any) moves to `directory`.previous
    (or is removed without `keep_previous`); see the module docstring. `updates` goes into the card."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_fraud_model(model, staging, metrics=metrics)
        if updates:
            card = json.loads((staging / CARD).read_text())
            (staging / CARD).write_text(json.dumps({**card, "updates": updates}, indent=2) + "\n")
        export_onnx(model, staging / ONNX_FILE)  # a scorer serving DIR swaps without exporting
        staging.chmod(0o755)  # mkdtemp makes it private
        previous = directory.with_name(directory.name + PREVIOUS)
        if directory.exists():
            if previous.exists():
                shutil.rmtree(previous)
            directory.rename(previous)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not keep_previous:
        shutil.rmtree(previous, ignore_errors=True)
    return directory
