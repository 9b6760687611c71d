"""Dev metrics of adapter training, and the one per task that picks the best state.

    accuracy([0, 1, 1], [0, 1, 0])                                # 0.667
    macro_f1([0, 1, 1], [0, 1, 0])                                # 0.667
    entity_scores([["B-D", "I-D", "O"]], [["B-D", "O", "O"]])    # {"precision": 0.0, ...}: wrong end
    is_better("lm", {"loss": 2.1}, {"loss": 2.3})                 # True

Plain Python over class ids and BIO tags: no torch and no model (`evaluate` in adapters.py runs
the model and hands its predictions here).
"""

from __future__ import annotations

from ..tagging import bio_spans

# The dev metric that picks the best state, and whether higher is better (ties: lower dev loss).
SELECTION = {
    "lm": ("loss", "min"),
    "sequence-classification": ("macro_f1", "max"),
    "token-classification": ("f1", "max"),
}


def is_better(task: str, row: dict[str, float], best: dict[str, float]) -> bool:
    """Whether dev metrics `row` beat `best` on the SELECTION metric of `task` (ties: lower loss wins)."""
    metric, mode = SELECTION[task]
    sign = 1.0 if mode == "max" else -1.0
    return (sign * row[metric], -row["loss"]) > (sign * best[metric], -best["loss"])


def accuracy(gold: list[int], predicted: list[int]) -> float:
    """Fraction of positions where `predicted` equals `gold` (0.0 for no positions)."""
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / max(len(gold), 1)


def macro_f1(gold: list[int], predicted: list[int]) -> float:
    """Unweighted mean of per-class F1 over the classes seen in either list (as scikit-learn)."""
    scores = []
    for c in sorted(set(gold) | set(predicted)):
        tp = sum(g == c and p == c for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != c and p == c for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == c and p != c for g, p in zip(gold, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact (span, type) matches, all sentences pooled."""
    true = {(n, *s) for n, tags in enumerate(gold) for s in bio_spans(tags)}
    found = {(n, *s) for n, tags in enumerate(predicted) for s in bio_spans(tags)}
    return span_scores(matched=len(true & found), predicted=len(found), gold=len(true))


def span_scores(*, matched: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 from entity counts, and the counts themselves (they add up
    across evaluation sets, so pooled scores can be computed from several sets' counts)."""
    precision, recall = matched / max(predicted, 1), matched / max(gold, 1)
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "matched_entities": matched,
        "predicted_entities": predicted,
        "gold_entities": gold,
    }


def tagging_scores(gold: list[list[int]], predicted: list[list[int]], labels: list[str]) -> dict[str, float]:
    """Entity scores of tag-id sentences (`labels` names the ids) and the accuracy over all words."""
    pairs = [(g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)]
    scores = entity_scores(
        [[labels[i] for i in g] for g in gold], [[labels[i] for i in p] for p in predicted]
    )
    return {**scores, "token_accuracy": accuracy([g for g, _ in pairs], [p for _, p in pairs])}
