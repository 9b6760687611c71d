"""Copy decoding: a request may name token sequences its output copies from.

    params = SamplingParams(copy_from=(sentence_ids, ...), copy_bias=math.inf)   # only their text
    params = SamplingParams(copy_from=(snippet_ids, ...), copy_bias=12.0, copy_min_match=3,
                            copy_until=("\n",))                                  # pulled, to the line's end

At each step the longest tail of the request's tokens so far, prompt and output (up to `MAX_MATCH`
tokens, at least `copy_min_match`), that occurs in a source is looked up, and the tokens that
follow it there are the copy's next tokens; with `copy_min_match` 0 a copy may also start afresh:
where no tail occurs (at the start of the output, or after text of the model's own) they are the
tokens that start a source. A finite `copy_bias` is added to their logits: the model still picks,
but a completion whose line so far occurs in a snippet is pulled along it. An infinite one allows
only them: every output is then made of the sources' text, stitched where they share tokens, and
the model chooses which source to start and which way to go where two continue the same tail.
Each source may carry a weight (`copy_weights`), added to its tokens' bias, and copying ends for
good once the output's text holds one of `copy_until` (the engine checks it). The same lookup as
prompt-lookup decoding (which proposes such matches for speculation), here used to shape the
distribution.

Sources are token ids as the caller encoded them, so the caller decides where a copy may start
and end: the customer-service drafts pass each passage sentence followed by the end of the turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

MAX_MATCH = 8  # tokens of the output's tail looked up


class CopyIndex:
    """Where each token and each pair of tokens occur in the sources (with a token after them),
    and the sources' starts, each with the largest weight of the sources it comes from. Built in
    one pass over the sources (about 1 ms for 3,000 tokens with a `min_match` of 2 or more); a
    lookup starts from the places of the tail's last two tokens, so common tokens (a space, a
    bracket) cost no scan of the sources."""

    def __init__(
        self, sources: Sequence[Sequence[int]], weights: Sequence[float] = (), *, min_match: int = 0
    ) -> None:
        weights = list(weights) or [0.0] * len(sources)
        if len(weights) != len(sources):
            raise ValueError(f"{len(sources)} copy sources but {len(weights)} weights")
        self.min_match = min_match
        self.sources = [tuple(source) for source in sources]
        self.weights = weights
        self.starts: dict[int, float] = {}
        self.pairs: defaultdict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)  # -> (source, i)
        # token -> {next: weight}, for tails of one token: only when they may be copied on.
        self.singles: defaultdict[int, dict[int, float]] = defaultdict(dict)
        for s, (source, weight) in enumerate(zip(self.sources, weights, strict=True)):
            if source:
                _keep_max(self.starts, source[0], weight)
            for i, pair in enumerate(zip(source, source[1:-1], strict=False), 1):
                self.pairs[pair].append((s, i))
            if min_match <= 1:
                for token, following in zip(source, source[1:], strict=False):
                    _keep_max(self.singles[token], following, weight)

    def next_tokens(self, token_ids: Sequence[int]) -> dict[int, float]:
        """{token: weight} of the tokens that continue the longest tail of `token_ids` (up to
        MAX_MATCH tokens, at least `min_match`) found in a source; with `min_match` 0, the empty
        tail is found at every source's start."""
        longest, following = 0, dict[int, float]()
        places = self.pairs.get((token_ids[-2], token_ids[-1]), ()) if len(token_ids) >= 2 else ()
        for s, i in places:
            source, n = self.sources[s], 2
            while n < MAX_MATCH and n < len(token_ids) and n <= i and source[i - n] == token_ids[-1 - n]:
                n += 1
            if n > longest:
                longest, following = n, dict[int, float]()
            if n == longest:
                _keep_max(following, source[i + 1], self.weights[s])
        if not longest and token_ids and token_ids[-1] in self.singles:
            longest, following = 1, self.singles[token_ids[-1]]
        if longest and longest >= self.min_match:
            return following
        return self.starts if self.min_match == 0 else {}


def _keep_max(weights: dict[int, float], token: int, weight: float) -> None:
    weights[token] = max(weight, weights.get(token, weight))
