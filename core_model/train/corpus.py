"""The documents the embedded default model is pre-trained on, as `(source_label, text)` pairs.

    train, held_out = pretraining_documents()
    train[0]     # ("stdlib:__future__.py", "Record of phased-in incompatible language changes. ...")
    held_out[0]  # ("stdlib:...", "...")  standard-library files kept out of training
    for text in dataset_documents("banking77"): ...   # one customer utterance per document

Two sources, both read from this machine at run time (nothing is copied into the repository):

- the `.py` files of the running interpreter's standard library, without its test folders, split
  into train and held out by a stable hash of each file's relative path (`split_held_out`), so the
  model card's held-out loss is measured on the same files on every machine;
- the *training* splits of five licensed datasets found through `core_model.datasets.dataset_dir`
  (`PRETRAINING_DATASETS`). Dev and test splits are never read here: the verticals evaluate on
  them. `bank_faq` is refused because it has no licence.

This module only reads files and renders them as plain text; it knows nothing about tokenisation,
packing or batching.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from core_model.datasets import dataset_dir

log = logging.getLogger(__name__)

# Folder names pruned anywhere under the standard library: test suites (`test`, `tests`,
# `idle_test`, which also drops `lib2to3/tests` with its deliberately broken files), caches, and
# installed third-party packages.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"})

# NLU++ ships 20 folds with no fixed train/test split (SOURCE.md). Pre-training reads folds 0-9
# only; folds 10-19 stay unseen so that a vertical can evaluate on them.
NLUPP_TRAIN_FOLDS = tuple(range(10))

# Datasets in the shared folder that must never be trained on, with the reason.
UNLICENSED_DATASETS = {
    "bank_faq": "it has no licence (scraped HDFC Bank FAQ text, internal prototyping only)",
}


# ---------------------------------------------------------------- standard library


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder, e.g. `.../lib/python3.11`."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(*, root: Path | None = None) -> list[Path]:
    """Sorted `.py` files under `root` (default: `stdlib_root()`), without EXCLUDED_DIRS."""
    root = stdlib_root() if root is None else Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"standard-library folder not found at {root}")
    files: list[Path] = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in EXCLUDED_DIRS]  # prune before descending
        files.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return sorted(files)


def held_out_score(relative_path: str) -> float:
    """A number in [0, 1) fixed by the path alone: the first 8 bytes of its sha1, scaled."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_held_out(files: list[Path], *, root: Path, fraction: float = 0.02) -> tuple[list[Path], list[Path]]:
    """(train, held_out): a file is held out when `held_out_score` of its path relative to `root`
    (POSIX form) is below `fraction`. Each file's side depends on its path only, not on the other
    files or the machine. Input order is kept within each side."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    root = Path(root)
    train: list[Path] = []
    held_out: list[Path] = []
    for path in files:
        try:
            relative = Path(path).relative_to(root).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not under the split root {root}") from None
        (held_out if held_out_score(relative) < fraction else train).append(path)
    return train, held_out


def read_source(path: Path | str) -> str:
    """The file's text as UTF-8; undecodable bytes (some Pythons ship Latin-1 files) become U+FFFD."""
    return Path(path).read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------- licensed datasets


def _banking77(folder: Path) -> Iterator[str]:
    """train.csv (`text,category`): each utterance is a document."""
    with open(folder / "train.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["text", "category"]:
            raise ValueError(f"{f.name}: expected header text,category, got {reader.fieldnames}")
        yield from (row["text"] for row in reader)


def _nlupp_banking(folder: Path) -> Iterator[str]:
    """fold0.json ... fold9.json (lists of {"text", "intents"?, "slots"?}): each text is a document."""
    for fold in NLUPP_TRAIN_FOLDS:
        examples = json.loads((folder / f"fold{fold}.json").read_text(encoding="utf-8"))
        yield from (example["text"] for example in examples)


def _sgd_banks(folder: Path) -> Iterator[str]:
    """train.json (SGD dialogues): one document per dialogue, a `SPEAKER: utterance` line per turn."""
    dialogues = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    for dialogue in dialogues:
        yield "\n".join(f"{turn['speaker']}: {turn['utterance']}" for turn in dialogue["turns"])


def _render_subflow(flow: str, description: str, subflow: str, guide: dict) -> str:
    """One guidelines subflow as text: heading, instructions, then numbered agent actions."""
    lines = [f"{flow}: {subflow}", f"Flow: {description}", ""]
    lines += guide["instructions"]
    lines.append("")
    for number, action in enumerate(guide["actions"], start=1):
        lines.append(f"{number}. [{action['button']}] ({action['type']}) {action['text']}")
        lines += [f"   - {sub}" for sub in action["subtext"]]
    return "\n".join(lines)


def _abcd_guidelines(folder: Path) -> Iterator[str]:
    """abcd_sample.json conversations, then one document per guidelines.json subflow, then one per
    kb.json entry. Conversation lines are `agent: ...`, `customer: ...` and `action: ...` (the
    data's own speaker names; "action" turns are the agent's button results, kept as events)."""
    for conversation in json.loads((folder / "abcd_sample.json").read_text(encoding="utf-8")):
        yield "\n".join(f"{speaker}: {text}" for speaker, text in conversation["original"])
    guidelines = json.loads((folder / "guidelines.json").read_text(encoding="utf-8"))
    for flow, body in guidelines.items():
        for subflow, guide in body["subflows"].items():
            yield _render_subflow(flow, body["description"], subflow, guide)
    for intent, actions in json.loads((folder / "kb.json").read_text(encoding="utf-8")).items():
        yield f"To resolve {intent}, the agent takes these actions in order: {', '.join(actions)}."


# Tokens glued to the previous token / to the next token when rebuilding NCBI sentences. Beyond
# the usual punctuation, "-", "/" and "%" are glued too: the corpus splits "tumour-suppressor" and
# "50%" into separate tokens, and spaced-out hyphens would teach the model a spelling no one uses.
NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", ")", "]", "%", "-", "/"})
NO_SPACE_AFTER = frozenset({"(", "[", "-", "/"})


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens with spaces, except before NO_SPACE_BEFORE and after NO_SPACE_AFTER tokens."""
    text, previous = "", None
    for token in tokens:
        if previous is not None and token not in NO_SPACE_BEFORE and previous not in NO_SPACE_AFTER:
            text += " "
        text += token
        previous = token
    return text


def _ncbi_disease(folder: Path) -> Iterator[str]:
    """train.tsv (CoNLL `token<TAB>tag`, blank line between sentences): one document per sentence.
    The file has no abstract boundaries, so sentences cannot be grouped into abstracts."""
    path = folder / "train.tsv"
    tokens: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line:
                if tokens:
                    yield detokenize(tokens)
                tokens = []
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{line_number}: expected token<TAB>tag, got {line!r}")
            tokens.append(fields[0])
    if tokens:
        yield detokenize(tokens)


_READERS: dict[str, Callable[[Path], Iterator[str]]] = {
    "banking77": _banking77,
    "nlupp_banking": _nlupp_banking,
    "sgd_banks": _sgd_banks,
    "abcd_guidelines": _abcd_guidelines,
    "ncbi_disease": _ncbi_disease,
}
PRETRAINING_DATASETS: tuple[str, ...] = tuple(_READERS)


def dataset_documents(name: str) -> Iterator[str]:
    """Non-empty plain-text documents from the training split of licensed dataset `name`.

    ValueError for `bank_faq` (no licence) or a name outside PRETRAINING_DATASETS;
    FileNotFoundError (from `dataset_dir`) when the dataset folder is missing.
    """
    if name in UNLICENSED_DATASETS:
        raise ValueError(f"dataset {name!r} cannot be used for pre-training: {UNLICENSED_DATASETS[name]}")
    if name not in _READERS:
        supported = ", ".join(PRETRAINING_DATASETS)
        raise ValueError(f"unknown pre-training dataset {name!r}; supported: {supported}")
    folder = dataset_dir(name)  # checked now, not at the first next() of the generator
    return (text for text in _READERS[name](folder) if text.strip())


# ---------------------------------------------------------------- the whole corpus


def _stdlib_documents(files: list[Path], root: Path) -> Iterator[tuple[str, str]]:
    for path in files:
        text = read_source(path)
        if text.strip():
            yield f"stdlib:{path.relative_to(root).as_posix()}", text


def pretraining_documents(
    *, held_out_fraction: float = 0.02
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held_out) lists of `(source_label, text)`.

    train: the stdlib files not held out (labels like "stdlib:json/decoder.py") followed by every
    document of PRETRAINING_DATASETS (label = the dataset name). held_out: the held-out stdlib
    files only. Empty documents are skipped.
    """
    root = stdlib_root()
    files = stdlib_files(root=root)
    train_files, held_out_files = split_held_out(files, root=root, fraction=held_out_fraction)
    train = list(_stdlib_documents(train_files, root))
    held_out = list(_stdlib_documents(held_out_files, root))
    for name in PRETRAINING_DATASETS:
        train.extend((name, text) for text in dataset_documents(name))
    log.info("pre-training corpus: %d train documents, %d held out", len(train), len(held_out))
    return train, held_out
