"""Copy decoding: a request may name token sequences its output copies from.

    params = SamplingParams(copy_from=(sentence_ids, ...), copy_bias=4.0)       # pulled towards them
    params = SamplingParams(copy_from=(sentence_ids, ...), copy_bias=math.inf)  # only their text

At each step the longest tail of the output (up to `MAX_MATCH` tokens) that occurs in a source is
looked up, and the tokens that follow it there are the copy's next tokens; where no tail occurs
(the first token, or after text of the model's own) they are the tokens that start a source. A
finite `copy_bias` is added to their logits: the model still picks, but a reply that has started
a source's sentence is pulled along it. An infinite one allows only them: every output is then
made of the sources' text, stitched where they share tokens, and the model chooses which source
to start and which way to go where two continue the same tail. The same lookup as prompt-lookup
decoding (which proposes such matches for speculation), here used to shape the distribution.

Sources are token ids as the caller encoded them, so the caller decides where a copy may start
and end: the customer-service drafts pass each passage sentence followed by the end of the turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

MAX_MATCH = 8  # tokens of the output's tail looked up


class CopyIndex:
    """Where each token occurs in the sources (with a token after it), and the sources' starts,
    each with the largest weight of the sources it comes from. Built in one pass over the
    sources: a request's index costs well under a millisecond, on the request's own thread."""

    def __init__(self, sources: Sequence[Sequence[int]], weights: Sequence[float] = ()) -> None:
        weights = list(weights) or [0.0] * len(sources)
        if len(weights) != len(sources):
            raise ValueError(f"{len(sources)} copy sources but {len(weights)} weights")
        self.sources = [tuple(source) for source in sources]
        self.weights = weights
        self.starts: dict[int, float] = {}
        self.places: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)  # token -> (source, index)
        for s, (source, weight) in enumerate(zip(self.sources, weights, strict=True)):
            if source:
                _keep_max(self.starts, source[0], weight)
            for i, token in enumerate(source[:-1]):
                self.places[token].append((s, i))

    def next_tokens(self, output_ids: Sequence[int]) -> dict[int, float]:
        """{token: weight} of the tokens that continue the longest tail of `output_ids` (up to
        MAX_MATCH tokens) found in a source, or of the sources' first tokens when none is found."""
        if not output_ids:
            return self.starts
        longest, following = 0, dict[int, float]()
        for s, i in self.places.get(output_ids[-1], ()):
            source, n = self.sources[s], 1
            while n < MAX_MATCH and n < len(output_ids) and n <= i and source[i - n] == output_ids[-1 - n]:
                n += 1
            if n > longest:
                longest, following = n, dict[int, float]()
            if n == longest:
                _keep_max(following, source[i + 1], self.weights[s])
        return following or self.starts


def _keep_max(weights: dict[int, float], token: int, weight: float) -> None:
    weights[token] = max(weight, weights.get(token, weight))
