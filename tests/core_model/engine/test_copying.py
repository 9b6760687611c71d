# .venv/bin/python -m pytest tests/core_model/engine/test_copying.py -q
"""Copy decoding's lookup: the tokens that continue the output's longest tail found in a source."""

import random

import pytest

from core_model.engine.copying import MAX_MATCH, CopyIndex

SOURCES = ((1, 2, 3, 4), (5, 2, 3, 6), (7, 8))


def test_nothing_written_yet_gives_the_sources_starts():
    assert CopyIndex(SOURCES).next_tokens([]).keys() == {1, 5, 7}


def test_the_longest_tail_found_decides():
    index = CopyIndex(SOURCES)
    assert index.next_tokens([9, 2, 3]).keys() == {4, 6}  # "2 3" is in both
    assert index.next_tokens([1, 2, 3]).keys() == {4}  # "1 2 3" only in the first
    assert index.next_tokens([5, 2, 3]).keys() == {6}


def test_a_tail_found_nowhere_or_at_an_end_starts_again():
    index = CopyIndex(SOURCES)
    assert index.next_tokens([42]).keys() == {1, 5, 7}
    assert index.next_tokens([7, 8]).keys() == {1, 5, 7}  # the end of a source: nothing follows it


def test_only_the_last_max_match_tokens_are_looked_up():
    long = tuple(range(100, 100 + MAX_MATCH + 3))
    index = CopyIndex([long])
    assert index.next_tokens([0, *long[:-1]]).keys() == {long[-1]}
    # Two sources alike in their last MAX_MATCH tokens before a fork: both continue.
    fork = CopyIndex([(1, *long, 5), (2, *long, 6)])
    assert fork.next_tokens([1, *long]).keys() == {5, 6}


def test_a_token_carries_the_largest_weight_of_the_sources_it_continues():
    index = CopyIndex(SOURCES, weights=(0.0, -2.0, -5.0))
    assert index.next_tokens([]) == {1: 0.0, 5: -2.0, 7: -5.0}
    assert index.next_tokens([9, 2, 3]) == {4: 0.0, 6: -2.0}
    assert CopyIndex([(1, 2), (1, 2)], weights=(-3.0, -1.0)).next_tokens([1]) == {2: -1.0}
    assert CopyIndex(SOURCES).next_tokens([2]) == {3: 0.0}  # no weights: all 0
    with pytest.raises(ValueError, match="3 copy sources but 2 weights"):
        CopyIndex(SOURCES, weights=(0.0, 1.0))


def test_with_a_min_match_only_tails_that_long_are_copied_on():
    index = CopyIndex(SOURCES, min_match=2)
    assert index.next_tokens([9, 2, 3]).keys() == {4, 6}
    assert index.next_tokens([9, 3]) == {}  # one token found: too short; and no fresh start
    assert index.next_tokens([]) == {}


def scanned_next_tokens(sources, weights, min_match, token_ids):
    """The lookup by brute force: every place of every source, compared backwards."""
    longest, following = 0, {}
    for source, weight in zip(sources, weights, strict=True):
        for i in range(len(source) - 1):
            n = 0
            while n < min(MAX_MATCH, len(token_ids)) and n <= i and source[i - n] == token_ids[-1 - n]:
                n += 1
            if n and n > longest:
                longest, following = n, {}
            if n and n == longest:
                following[source[i + 1]] = max(weight, following.get(source[i + 1], weight))
    if longest and longest >= min_match:
        return following
    starts = {}
    for source, weight in zip(sources, weights, strict=True):
        if source:
            starts[source[0]] = max(weight, starts.get(source[0], weight))
    return starts if min_match == 0 else {}


def test_the_index_agrees_with_a_scan_of_the_sources():
    rng = random.Random(0)
    for _ in range(2000):
        vocabulary = rng.choice([3, 5, 10])
        sources = [tuple(rng.randrange(vocabulary) for _ in range(rng.randrange(15))) for _ in range(4)]
        weights = [rng.choice([0.0, -1.0, -2.0]) for _ in sources]
        min_match = rng.randrange(4)
        token_ids = [rng.randrange(vocabulary) for _ in range(rng.randrange(12))]
        expected = scanned_next_tokens(sources, weights, min_match, token_ids)
        assert CopyIndex(sources, weights, min_match=min_match).next_tokens(token_ids) == expected
