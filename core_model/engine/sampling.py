"""Token sampling for the inference engine: per-request settings and a batched sampler.

`SamplingParams` is what one request asks for (length, temperature, top-k, top-p, repetition
penalty, stops, seed, logprobs, the tokens its first one may be). `Sampler` turns one row of logits
per request into one token per request, each row under its own params, and reports log-probabilities
under the model's raw distribution. It is not a detokenizer and knows nothing about text: `stop`,
`stop_token_ids`, `ignore_eos` and `max_tokens` are carried here but checked by the engine
(`detokenize.StopStrings` matches stop strings); nor does it keep per-request state: the caller owns
each request's generator (`make_generator`) and its seen tokens.

Per row, in the order of transformers' and vLLM's samplers: the copy bias (`copying`), the allowed
tokens (a row given none allows all), repetition penalty, then greedy if temperature == 0, else
temperature, top-k, top-p (the nucleus, https://arxiv.org/abs/1904.09751) and a draw with the
row's own generator, so a seeded request gets the same tokens whatever else shares its batch. A
batch that is all greedy costs one argmax.

Legend: B batch (one row per request), V vocabulary, S rows that sample (temperature > 0),
R rows with top-k or top-p, N rows asking for logprobs, K top alternatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """How one request is sampled; validated on construction, hashable."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 turns it off
    top_p: float = 1.0  # 1 turns it off
    repetition_penalty: float = 1.0  # 1 turns it off; > 1 discourages tokens already seen
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None  # top alternatives per token; None: no logprobs; 0: the chosen token's
    # When set, the first generated token is one of these (token healing: `core_model.healing`).
    first_token_ids: tuple[int, ...] = ()
    # Token sequences the output copies from (`copying`): the tokens that continue a copy get
    # `copy_bias` added to their logits (0 turns it off; inf allows only them).
    copy_from: tuple[tuple[int, ...], ...] = ()
    copy_bias: float = 0.0
    copy_weights: tuple[float, ...] = ()  # one per source, added to its tokens' bias; () for none
    copy_min_match: int = 0  # the shortest tail that is copied on; 0: a copy may start anywhere
    copy_until: tuple[str, ...] = ()  # copying ends once the output's text holds one of these

    def __post_init__(self) -> None:
        # Lists (from JSON) and a single stop string are accepted; the stored form is always a tuple.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "first_token_ids", tuple(self.first_token_ids))
        object.__setattr__(self, "copy_from", tuple(tuple(source) for source in self.copy_from))
        object.__setattr__(self, "copy_weights", tuple(self.copy_weights))
        copy_until = (self.copy_until,) if isinstance(self.copy_until, str) else tuple(self.copy_until)
        object.__setattr__(self, "copy_until", copy_until)
        _require(self.max_tokens >= 1, "max_tokens must be >= 1", self.max_tokens)
        _require(self.temperature >= 0, "temperature must be >= 0 (0 means greedy)", self.temperature)
        _require(self.top_k >= 0, "top_k must be >= 0 (0 turns it off)", self.top_k)
        _require(0 < self.top_p <= 1, "top_p must be in (0, 1]", self.top_p)
        _require(self.repetition_penalty > 0, "repetition_penalty must be > 0", self.repetition_penalty)
        _require(all(self.stop), "stop strings must be non-empty", self.stop)
        _require(
            min(self.first_token_ids, default=0) >= 0, "first_token_ids must be >= 0", self.first_token_ids
        )
        _require(self.copy_bias >= 0, "copy_bias must be >= 0 (0 turns it off)", self.copy_bias)
        _require(
            min((min(s, default=0) for s in self.copy_from), default=0) >= 0,
            "copy_from token ids must be >= 0",
            self.copy_from,
        )
        _require(
            not self.copy_weights or len(self.copy_weights) == len(self.copy_from),
            "copy_weights must give one weight per copy_from source",
            self.copy_weights,
        )
        _require(all(map(math.isfinite, self.copy_weights)), "copy_weights must be finite", self.copy_weights)
        _require(self.copy_min_match >= 0, "copy_min_match must be >= 0", self.copy_min_match)
        _require(all(self.copy_until), "copy_until strings must be non-empty", self.copy_until)
        logprobs_ok = self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS
        _require(logprobs_ok, f"logprobs must be None or in [0, {MAX_LOGPROBS}]", self.logprobs)


def _require(ok: bool, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{rule}, got {value!r}")


@dataclass
class SampleOutput:
    """One entry per row. Logprobs are of the raw distribution, before penalty, temperature or top-k/p."""

    token_ids: list[int]
    logprobs: list[float | None]  # the chosen token's; None where the row asked for none
    top_logprobs: list[list[tuple[int, float]] | None]  # (token id, logprob), best first


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator seeded for one request, or None to draw from torch's global stream."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


class Sampler:
    """Picks one token per row; holds no state, so one instance serves every step."""

    def sample(
        self,
        logits_BV: torch.Tensor,
        *,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
        seen_tokens: Sequence[Sequence[int]],
        allowed_token_ids: Sequence[Sequence[int]] | None = None,
        copy_token_ids: Sequence[Mapping[int, float]] | None = None,
    ) -> SampleOutput:
        """One token per row; `allowed_token_ids` (per row, empty for any) restricts the choice;
        `copy_token_ids` (per row) are the tokens that continue a copy, raised by the row's `copy_bias`."""
        if not len(logits_BV) == len(params) == len(generators) == len(seen_tokens):
            raise ValueError(
                f"one row each: {len(logits_BV)} logits rows, {len(params)} params, "
                f"{len(generators)} generators, {len(seen_tokens)} seen_tokens lists"
            )
        raw_BV = logits_BV.float()
        biased_BV = raw_BV
        if copy_token_ids is not None:
            biases = [p.copy_bias for p in params]
            biased_BV = apply_copy_bias(raw_BV, biases=biases, token_ids=copy_token_ids)
        logits_BV = apply_repetition_penalty(
            restrict_to(biased_BV, allowed_token_ids or [()] * len(params)),
            penalties=[p.repetition_penalty for p in params],
            seen_tokens=seen_tokens,
        )
        token_ids_B = logits_BV.argmax(dim=-1)
        sampled = [row for row, p in enumerate(params) if p.temperature > 0]
        if sampled:
            rows_S = torch.tensor(sampled, device=logits_BV.device)
            token_ids_B[rows_S] = _draw(
                logits_BV[rows_S],
                params=[params[row] for row in sampled],
                generators=[generators[row] for row in sampled],
            )
        logprobs, top_logprobs = _raw_logprobs(raw_BV, token_ids_B, params=params)
        return SampleOutput(token_ids_B.tolist(), logprobs, top_logprobs)


def restrict_to(logits_BV: torch.Tensor, allowed_token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """-inf outside each row's allowed tokens; a row allowing none is left whole."""
    rows = [row for row, allowed in enumerate(allowed_token_ids) if allowed]
    if not rows:
        return logits_BV
    keep_BV = torch.ones_like(logits_BV, dtype=torch.bool)
    for row in rows:
        keep_BV[row] = False
        keep_BV[row, torch.tensor(allowed_token_ids[row], device=logits_BV.device)] = True
    return logits_BV.masked_fill(~keep_BV, -math.inf)


def apply_copy_bias(
    logits_BV: torch.Tensor, *, biases: Sequence[float], token_ids: Sequence[Mapping[int, float]]
) -> torch.Tensor:
    """Each row's copy tokens ({token: its source's weight}) raised by the row's bias plus their
    weight: a bias of 0 leaves the row as it is; inf allows only them, raised by their weight."""
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for row, (bias, tokens) in enumerate(zip(biases, token_ids, strict=True)):
        if bias:
            step = 0.0 if math.isinf(bias) else bias
            rows += [row] * len(tokens)
            cols += tokens
            values += [step + weight for weight in tokens.values()]
    if rows:
        device = logits_BV.device
        bias_BV = torch.zeros_like(logits_BV)
        bias_BV[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = torch.tensor(
            values, dtype=logits_BV.dtype, device=device
        )
        logits_BV = logits_BV + bias_BV
    only = [list(tokens) if math.isinf(bias) else () for bias, tokens in zip(biases, token_ids, strict=True)]
    return restrict_to(logits_BV, only)


def apply_repetition_penalty(
    logits_BV: torch.Tensor, *, penalties: Sequence[float], seen_tokens: Sequence[Sequence[int]]
) -> torch.Tensor:
    """transformers' rule on each row's seen tokens: positive logits / penalty, negative * penalty."""
    rows: list[int] = []
    cols: list[int] = []
    for row, (penalty, seen) in enumerate(zip(penalties, seen_tokens, strict=True)):
        if penalty != 1.0:
            unique = set(seen)
            rows += [row] * len(unique)
            cols += unique
    if not rows:
        return logits_BV
    device = logits_BV.device
    seen_BV = torch.zeros_like(logits_BV, dtype=torch.bool)
    seen_BV[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    penalty_B1 = torch.tensor(penalties, dtype=logits_BV.dtype, device=device).unsqueeze(1)
    penalised_BV = torch.where(logits_BV < 0, logits_BV * penalty_B1, logits_BV / penalty_B1)
    return torch.where(seen_BV, penalised_BV, logits_BV)


def apply_top_k_top_p(
    logits_BV: torch.Tensor, *, top_k: Sequence[int], top_p: Sequence[float]
) -> torch.Tensor:
    """Set to -inf each row's logits outside its top-k, then outside its top-p nucleus.

    The nucleus is the smallest set of best tokens whose mass (after top-k) reaches top_p: a token
    stays while the mass before it is below top_p, so the best token always stays.
    """
    filtered = [row for row, (k, p) in enumerate(zip(top_k, top_p, strict=True)) if k > 0 or p < 1]
    if not filtered:
        return logits_BV
    V, device = logits_BV.shape[-1], logits_BV.device
    rows_R = torch.tensor(filtered, device=device)
    # stable: ties keep vocabulary order, so a row's result does not depend on its batch.
    sorted_RV, order_RV = logits_BV[rows_R].sort(dim=-1, descending=True, stable=True)
    k_R1 = torch.tensor([top_k[row] or V for row in filtered], device=device).unsqueeze(1)
    sorted_RV = sorted_RV.masked_fill(torch.arange(V, device=device) >= k_R1, -math.inf)
    probs_RV = sorted_RV.softmax(dim=-1)
    mass_before_RV = probs_RV.cumsum(dim=-1) - probs_RV
    # NOTE: top_p == 1 must keep everything; rounding can push the mass before a tail token to 1.
    p_R1 = torch.tensor([top_p[row] if top_p[row] < 1 else math.inf for row in filtered], device=device)
    sorted_RV = sorted_RV.masked_fill(mass_before_RV >= p_R1.unsqueeze(1), -math.inf)
    out_BV = logits_BV.clone()
    out_BV[rows_R] = torch.empty_like(sorted_RV).scatter_(-1, order_RV, sorted_RV)
    return out_BV


def _draw(
    logits_SV: torch.Tensor, *, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    temperature_S1 = torch.tensor([p.temperature for p in params], device=logits_SV.device).unsqueeze(1)
    logits_SV = apply_top_k_top_p(
        logits_SV / temperature_S1, top_k=[p.top_k for p in params], top_p=[p.top_p for p in params]
    )
    probs_SV = logits_SV.softmax(dim=-1)
    token_ids_S = torch.empty(len(params), dtype=torch.long, device=logits_SV.device)
    unseeded = [row for row, g in enumerate(generators) if g is None]
    if unseeded:  # one draw for every row on the global stream
        rows_U = torch.tensor(unseeded, device=logits_SV.device)
        token_ids_S[rows_U] = torch.multinomial(probs_SV[rows_U], 1).squeeze(1)
    for row, generator in enumerate(generators):
        if generator is not None:  # its own stream, so its draws ignore the rest of the batch
            token_ids_S[row : row + 1] = torch.multinomial(probs_SV[row], 1, generator=generator)
    return token_ids_S


def _raw_logprobs(
    raw_BV: torch.Tensor, token_ids_B: torch.Tensor, *, params: Sequence[SamplingParams]
) -> tuple[list[float | None], list[list[tuple[int, float]] | None]]:
    logprobs: list[float | None] = [None] * len(params)
    top_logprobs: list[list[tuple[int, float]] | None] = [None] * len(params)
    asked = [row for row, p in enumerate(params) if p.logprobs is not None]
    if not asked:
        return logprobs, top_logprobs
    rows_N = torch.tensor(asked, device=raw_BV.device)
    logprobs_NV = raw_BV[rows_N].log_softmax(dim=-1)
    chosen_N = logprobs_NV.gather(1, token_ids_B[rows_N].unsqueeze(1)).squeeze(1)
    top_values_NK, top_ids_NK = logprobs_NV.topk(max(params[row].logprobs or 0 for row in asked), dim=-1)
    for row, chosen, values, ids in zip(
        asked, chosen_N.tolist(), top_values_NK.tolist(), top_ids_NK.tolist(), strict=True
    ):
        n = params[row].logprobs or 0
        logprobs[row] = chosen
        top_logprobs[row] = list(zip(ids[:n], values[:n], strict=True))
    return logprobs, top_logprobs
