"""What server-side differential privacy (DP) buys: the (epsilon, delta) of a federated run whose
coordinator clips each site's update to norm C and adds Gaussian noise of standard deviation
z * C to their sum (Flower's DifferentialPrivacyServerSideFixedClipping, noise multiplier z).

    epsilon(noise_multiplier=1.0, rounds=10)     # 20.1 at delta = 1e-5

The guarantee is site-level: it bounds what the published adapters reveal about whether one site
took part, whatever its records (so it also covers any single record). Every site trains in every
round, so there is no privacy amplification by sampling. The bound composes the rounds in Rényi
DP, where one Gaussian mechanism of multiplier z is (alpha, alpha / (2 z^2))-RDP (Mironov 2017,
https://arxiv.org/abs/1702.07476), and converts at the best order: epsilon = T / (2 z^2) +
sqrt(2 T log(1 / delta)) / z for T rounds. It is an upper bound, not tight; a noise multiplier of
about 1 or more is what gives a single-digit epsilon over a few rounds.
"""

from __future__ import annotations

import math

DEFAULT_DELTA = 1e-5


def epsilon(*, noise_multiplier: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """Site-level epsilon after `rounds` rounds at `noise_multiplier` (inf without noise)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if noise_multiplier <= 0:
        return math.inf
    z = noise_multiplier
    return rounds / (2 * z * z) + math.sqrt(2 * rounds * math.log(1 / delta)) / z
