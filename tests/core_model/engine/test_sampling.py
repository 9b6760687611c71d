# .venv/bin/python -m pytest tests/core_model/engine/test_sampling.py -q
"""Sampler: greedy, seeded draws independent of the batch, top-k/top-p, repetition penalty, copy
bias, logprobs."""

import math

import pytest
import torch

from core_model.engine.sampling import (
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    make_generator,
)

# B batch, V vocabulary
V = 50
GREEDY = SamplingParams(temperature=0)


def random_logits(B: int, *, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 3


def sample(
    logits_BV, params, *, generators=None, seen_tokens=None, allowed_token_ids=None, copy_token_ids=None
):
    B = len(params)
    return Sampler().sample(
        logits_BV,
        params=params,
        generators=generators or [make_generator(p.seed, "cpu") for p in params],
        seen_tokens=seen_tokens or [[] for _ in range(B)],
        allowed_token_ids=allowed_token_ids,
        copy_token_ids=copy_token_ids,
    )


def seeded_stream(params, *, companions, steps=6):
    """Tokens of request 0 over `steps` decode steps, batched with `companions`."""
    batch = [params, *companions]
    generators = [make_generator(p.seed, "cpu") for p in batch]
    tokens = []
    for step in range(steps):
        logits_BV = torch.cat([random_logits(1, seed=step), random_logits(len(companions), seed=99 + step)])
        out = sample(logits_BV, batch, generators=generators)
        tokens.append(out.token_ids[0])
    return tokens


def test_greedy_equals_argmax():
    logits_BV = random_logits(4)
    out = sample(logits_BV, [GREEDY] * 4)
    assert out.token_ids == logits_BV.argmax(dim=-1).tolist()


def test_same_seed_gives_same_tokens():
    params = SamplingParams(temperature=1.5, seed=7)
    assert seeded_stream(params, companions=[]) == seeded_stream(params, companions=[])


def test_seeded_tokens_do_not_depend_on_batch_companions():
    params = SamplingParams(temperature=1.5, seed=7)
    companions = [GREEDY, SamplingParams(top_k=5, top_p=0.5, repetition_penalty=1.3)]
    assert seeded_stream(params, companions=[]) == seeded_stream(params, companions=companions)


def test_different_seeds_give_different_tokens():
    stream_a = seeded_stream(SamplingParams(temperature=2.0, seed=1), companions=[])
    stream_b = seeded_stream(SamplingParams(temperature=2.0, seed=2), companions=[])
    assert stream_a != stream_b


def test_mixed_batch_agrees_with_rows_sampled_alone():
    batch = [GREEDY, SamplingParams(seed=3, top_k=4), SamplingParams(seed=4, top_p=0.6, temperature=0.7)]
    logits_BV = random_logits(3)
    together = sample(logits_BV, batch).token_ids
    alone = [sample(logits_BV[row : row + 1], [p]).token_ids[0] for row, p in enumerate(batch)]
    assert together == alone


def test_top_k_one_equals_greedy():
    logits_BV = random_logits(8)
    params = [SamplingParams(top_k=1, seed=row) for row in range(8)]
    assert sample(logits_BV, params).token_ids == logits_BV.argmax(dim=-1).tolist()


def test_tiny_top_p_equals_greedy():
    logits_BV = random_logits(8)
    params = [SamplingParams(top_p=1e-6, seed=row) for row in range(8)]
    assert sample(logits_BV, params).token_ids == logits_BV.argmax(dim=-1).tolist()


def test_top_k_draws_only_the_k_best():
    logits_V = torch.linspace(1.0, 0.0, V)  # nearly flat, so every kept token gets drawn
    logits_BV = logits_V.expand(300, V)
    params = [SamplingParams(top_k=3, seed=row) for row in range(300)]
    assert set(sample(logits_BV, params).token_ids) == {0, 1, 2}


def test_allowed_tokens_restrict_their_row_only():
    logits_BV = torch.linspace(1.0, 0.0, V).expand(300, V)
    params = [SamplingParams(seed=row) for row in range(299)] + [GREEDY]
    allowed = [(7, 9)] * 299 + [()]
    out = sample(logits_BV, params, allowed_token_ids=allowed)
    assert set(out.token_ids[:299]) == {7, 9} and out.token_ids[299] == 0
    assert sample(logits_BV[:1], [GREEDY], allowed_token_ids=[(9, 7)]).token_ids == [7]


def test_copy_bias_raises_the_copy_tokens_of_its_rows_only():
    logits_BV = torch.tensor([[5.0, 3.0, 0.0, 1.0]]).expand(4, 4)
    params = [
        SamplingParams(temperature=0, copy_bias=1.5),  # 3 + 1.5 < 5: the model's best stays
        SamplingParams(temperature=0, copy_bias=2.5),  # 3 + 2.5 > 5: the copy wins
        SamplingParams(temperature=0, copy_bias=math.inf),  # only the copy's tokens
        SamplingParams(temperature=0),  # no bias: its copy tokens are ignored
    ]
    out = sample(logits_BV, params, copy_token_ids=[{1: 0.0}, {1: 0.0}, {2: 0.0, 3: 0.0}, {1: 0.0}])
    assert out.token_ids == [0, 1, 3, 0]
    weighted = sample(logits_BV[:2], params[1:3], copy_token_ids=[{1: -1.0}, {2: 0.0, 3: -1.5}])
    assert weighted.token_ids == [0, 2]  # 3 + 2.5 - 1 < 5; 0 + 0 > 1 - 1.5


def test_copy_bias_leaves_logprobs_raw():
    logits_BV = torch.tensor([[5.0, 3.0, 0.0, 1.0]])
    params = [SamplingParams(temperature=0, copy_bias=math.inf, logprobs=0)]
    out = sample(logits_BV, params, copy_token_ids=[{2: 0.0}])
    assert out.token_ids == [2]
    assert out.logprobs[0] == pytest.approx(torch.log_softmax(logits_BV[0], dim=-1)[2].item())


def test_repetition_penalty_demotes_a_seen_best_token():
    logits_BV = torch.tensor([[0.0, 4.0, 0.0, 5.0]])
    params = [SamplingParams(temperature=0, repetition_penalty=2.0)]
    assert sample(logits_BV, params, seen_tokens=[[3]]).token_ids == [1]


def test_repetition_penalty_multiplies_negative_logits():
    logits_BV = torch.tensor([[-1.0, -1.5]])
    params = [SamplingParams(temperature=0, repetition_penalty=2.0)]
    assert sample(logits_BV, params, seen_tokens=[[0]]).token_ids == [1]


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits_BV = torch.tensor([[-2.0, 2.0, 3.0]])
    penalised_BV = apply_repetition_penalty(logits_BV, penalties=[2.0], seen_tokens=[[0, 1]])
    assert penalised_BV.tolist() == [[-4.0, 1.0, 3.0]]


def test_chosen_logprob_is_of_the_raw_distribution():
    logits_BV = random_logits(2)
    params = [SamplingParams(temperature=0.5, top_k=3, seed=0, logprobs=0), GREEDY]
    out = sample(logits_BV, params)
    expected = logits_BV[0].log_softmax(dim=-1)[out.token_ids[0]].item()
    assert out.logprobs == [pytest.approx(expected), None]


def test_top_logprobs_are_the_n_best_sorted():
    logits_BV = random_logits(1)
    out = sample(logits_BV, [SamplingParams(temperature=0, logprobs=5)])
    top = out.top_logprobs[0]
    best_V = logits_BV[0].log_softmax(dim=-1).topk(5)
    assert [token for token, _ in top] == best_V.indices.tolist()
    assert [value for _, value in top] == sorted((value for _, value in top), reverse=True)


def test_logprobs_zero_returns_no_alternatives():
    out = sample(random_logits(1), [SamplingParams(temperature=0, logprobs=0)])
    assert out.top_logprobs == [[]]


def test_make_generator_without_seed_is_none():
    assert make_generator(None, "cpu") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("temperature", -0.1),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("repetition_penalty", 0.0),
        ("logprobs", 21),
        ("logprobs", -1),
        ("stop", ("",)),
        ("first_token_ids", (-1,)),
        ("copy_bias", -1.0),
        ("copy_bias", math.nan),
        ("copy_from", ((1, -2),)),
        ("copy_weights", (1.0, 2.0)),  # two weights, no source
        ("copy_min_match", -1),
        ("copy_until", ("",)),
    ],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_stop_accepts_a_list_or_a_single_string():
    lists = SamplingParams(stop=["a", "b"], stop_token_ids=[1, 2])  # type: ignore[arg-type]
    single = SamplingParams(stop="</s>")  # type: ignore[arg-type]
    assert (lists.stop, lists.stop_token_ids, single.stop) == (("a", "b"), (1, 2), ("</s>",))


def test_mismatched_batch_lengths_raise():
    with pytest.raises(ValueError, match="one row each"):
        Sampler().sample(random_logits(2), params=[GREEDY], generators=[None], seen_tokens=[[]])
