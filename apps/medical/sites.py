"""A hospital's records on its own machine: where a SuperNode finds them, how a corpus is cut
into sites for trials and benchmarks, and what a site may show about them (counts only).

    site = load_site({"site": "north", "data": "/srv/north"})   # train.* and, if present, dev.*
    shares = split_corpus(read_tagged("train.tsv"), ["north", "south", "east"], mode="skewed")
    write_site("/srv/north", shares["north"])                   # train.tsv + dev.tsv, CoNLL
    summarize(site.train)          # {"sentences": 1808, "words": 45230, "entities": {"Disease": 1711}}

Any corpus `core_model.tagging.read_tagged` reads works: CoNLL BIO columns or JSONL spans.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core_model.tagging import read_tagged
from core_model.train.metrics import bio_spans
from federated.site import Site

SUFFIXES = (".tsv", ".conll", ".bio", ".iob", ".txt", ".jsonl")
TRAIN_STEMS, EVALUATION_STEMS = ("train",), ("dev", "devel", "validation")
MODES = ("even", "skewed")
DOCUMENT_SENTENCES = 10  # NCBI-disease keeps abstracts in order without separators: blocks of this many
SKEWED_SHARES = (0.5, 0.3, 0.2)
DEV_FRACTION = 0.1


def find_file(directory: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in SUFFIXES:
            if (directory / f"{stem}{suffix}").is_file():
                return directory / f"{stem}{suffix}"
    return None


def load_site(node_config: Mapping[str, Any]) -> Site:
    """The site named by node config "site" (default: the folder's name), records from "data"."""
    if "data" not in node_config:
        raise ValueError('this SuperNode has no "data" in its --node-config (the folder of its records)')
    directory = Path(str(node_config["data"]))
    train = find_file(directory, TRAIN_STEMS)
    if train is None:
        names = ", ".join(f"train{s}" for s in SUFFIXES)
        raise FileNotFoundError(f"no training records in {directory}: expected one of {names}")
    evaluation = find_file(directory, EVALUATION_STEMS)
    name = str(node_config.get("site") or directory.name)
    return Site(name=name, train=read_tagged(train), evaluation=read_tagged(evaluation) if evaluation else [])


def documents(examples: list[dict[str, Any]], size: int = DOCUMENT_SENTENCES) -> list[list[dict[str, Any]]]:
    return [examples[i : i + size] for i in range(0, len(examples), size)]


def split_corpus(
    examples: list[dict[str, Any]], sites: list[str], *, mode: str = "even", seed: int = 0
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each site's {"train", "dev"} share, whole documents each (DEV_FRACTION of a site's
    documents for its own evaluation). "even": shuffled documents dealt in turn, so sizes and
    label mix match. "skewed": documents ordered by entity density and cut into SKEWED_SHARES of
    the corpus (renormalised for other site counts), so sites differ in size and label mix."""
    if mode not in MODES:
        raise ValueError(f"unknown split mode {mode!r}; expected one of {MODES}")
    if len(sites) < 1 or len(set(sites)) != len(sites):
        raise ValueError(f"site names must be distinct and at least one: {sites}")
    docs = documents(examples)
    random.Random(seed).shuffle(docs)
    if mode == "even":
        shares = [docs[i :: len(sites)] for i in range(len(sites))]
    else:
        docs.sort(key=_density, reverse=True)
        weights = SKEWED_SHARES if len(sites) == len(SKEWED_SHARES) else [2.0**-i for i in range(len(sites))]
        bounds, total, shares = [0], sum(weights), []
        for w in weights:
            bounds.append(bounds[-1] + round(len(docs) * w / total))
        bounds[-1] = len(docs)
        shares = [docs[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        for share in shares:
            random.Random(seed).shuffle(share)
    out = {}
    for name, share in zip(sites, shares, strict=True):
        cut = max(1, round(len(share) * DEV_FRACTION)) if len(share) > 1 else 0
        out[name] = {"train": [s for d in share[cut:] for s in d], "dev": [s for d in share[:cut] for s in d]}
    return out


def _density(document: list[dict[str, Any]]) -> float:
    return sum(len(bio_spans(s["tags"])) for s in document) / len(document)


def write_site(directory: str | Path, share: Mapping[str, list[dict[str, Any]]]) -> Path:
    """`directory`/train.tsv and dev.tsv (when it has any) in CoNLL: word TAB tag, a blank line
    between sentences."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        if not share.get(split):
            (directory / f"{split}.tsv").unlink(missing_ok=True)
            continue
        rows = [
            "\n".join(f"{w}\t{t}" for w, t in zip(s["tokens"], s["tags"], strict=True))
            for s in share.get(split, [])
        ]
        (directory / f"{split}.tsv").write_text("\n\n".join(rows) + "\n", encoding="utf-8")
    return directory


def summarize(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts only (sentences, words, entities per type): what a site may show about its records."""
    entities = Counter(label for s in examples for label, _, _ in bio_spans(s["tags"]))
    return {
        "sentences": len(examples),
        "words": sum(len(s["tokens"]) for s in examples),
        "entities": dict(sorted(entities.items())),
    }
