"""The linear-chain CRF against brute force over every tag sequence of short sentences."""

import itertools

import torch

from core_model.crf import Transitions, marginals, negative_log_likelihood, sentence_scores, viterbi

L = 3


def random_transitions(generator: torch.Generator) -> Transitions:
    return Transitions(*(torch.randn(*shape, generator=generator) for shape in ((L, L), (L,), (L,))))


def path_score(scores_WL: torch.Tensor, transitions: Transitions, path: tuple[int, ...]) -> torch.Tensor:
    total = transitions.start_L[path[0]] + transitions.end_L[path[-1]]
    total = total + sum(scores_WL[w, t] for w, t in enumerate(path))
    return total + sum(transitions.pairs_LL[a, b] for a, b in itertools.pairwise(path))


def all_paths(words: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(L), repeat=words))


def test_viterbi_and_likelihood_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    for words in (1, 2, 4):
        scores_WL, transitions = torch.randn(words, L, generator=generator), random_transitions(generator)
        paths = all_paths(words)
        totals = torch.stack([path_score(scores_WL, transitions, p) for p in paths])
        assert tuple(viterbi(scores_WL, transitions)) == paths[int(totals.argmax())]
        gold = paths[5 % len(paths)]
        nll = negative_log_likelihood(
            scores_WL[None], torch.tensor([gold]), torch.ones(1, words, dtype=torch.bool), transitions
        )
        expected = torch.logsumexp(totals, 0) - path_score(scores_WL, transitions, gold)
        torch.testing.assert_close(nll, expected[None])


def test_marginals_are_the_summed_probabilities_of_the_paths_through_each_tag():
    generator = torch.Generator().manual_seed(1)
    scores_WL, transitions = torch.randn(3, L, generator=generator), random_transitions(generator)
    paths = all_paths(3)
    probs = torch.stack([path_score(scores_WL, transitions, p) for p in paths]).softmax(0)
    expected = torch.zeros(3, L)
    for p, path in zip(probs, paths, strict=True):
        for w, tag in enumerate(path):
            expected[w, tag] += p
    torch.testing.assert_close(marginals(scores_WL, transitions), expected)


def test_rows_of_different_lengths_score_as_if_alone():
    generator = torch.Generator().manual_seed(2)
    transitions = random_transitions(generator)
    # two padded rows: labelled positions scattered among ignored ones (-100), and a row with none
    labels_BT = torch.tensor([[-100, 2, -100, 0, 1, -100], [1, -100, 2, -100, -100, -100], [-100] * 6])
    scores_BTL = torch.randn(3, 6, L, generator=generator)
    scores_BWL, tags_BW, mask_BW = sentence_scores(scores_BTL, labels_BT, ignore_index=-100)
    assert tags_BW.tolist() == [[2, 0, 1], [1, 2, 0], [0, 0, 0]]
    assert mask_BW.tolist() == [[True] * 3, [True, True, False], [False] * 3]
    nll_B = negative_log_likelihood(scores_BWL, tags_BW, mask_BW, transitions)
    alone = negative_log_likelihood(
        scores_BTL[1, [0, 2]][None], torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.bool), transitions
    )
    torch.testing.assert_close(nll_B[1:2], alone)
    assert nll_B[2] == 0 and nll_B[0] > 0


def test_blocked_transitions_are_never_decoded():
    scores_WL = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    blocked = torch.zeros(L, L)
    blocked[1, 1] = -1e4  # tag 1 may not follow itself
    path = viterbi(scores_WL, Transitions(blocked, torch.zeros(L), torch.zeros(L)))
    assert path in ([1, 0], [1, 2], [0, 1], [2, 1]) and path.count(1) == 1
