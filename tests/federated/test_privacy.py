"""The privacy accountant of server-side DP: the closed form is the Rényi DP bound at its best
order, and epsilon moves the way noise and rounds say it must.

.venv/bin/python -m pytest tests/federated/test_privacy.py -q
"""

import math

import pytest

from federated.privacy import epsilon


@pytest.mark.parametrize(("noise", "rounds", "delta"), [(1.0, 10, 1e-5), (0.3, 3, 1e-6), (2.5, 100, 1e-3)])
def test_epsilon_is_the_renyi_bound_at_its_best_order(noise, rounds, delta):
    def bound(alpha: float) -> float:  # T rounds of (alpha, alpha / 2z^2)-RDP, converted to (eps, delta)
        return rounds * alpha / (2 * noise**2) + math.log(1 / delta) / (alpha - 1)

    best = min(bound(1 + k / 1000) for k in range(1, 200_000))
    assert epsilon(noise_multiplier=noise, rounds=rounds, delta=delta) == pytest.approx(best, rel=1e-4)


def test_more_noise_or_fewer_rounds_spend_less():
    assert epsilon(noise_multiplier=2.0, rounds=10) < epsilon(noise_multiplier=1.0, rounds=10)
    assert epsilon(noise_multiplier=1.0, rounds=5) < epsilon(noise_multiplier=1.0, rounds=10)
    assert epsilon(noise_multiplier=0.0, rounds=1) == math.inf


@pytest.mark.parametrize(("rounds", "delta"), [(0, 1e-5), (3, 0.0), (3, 1.0)])
def test_bad_rounds_or_delta_are_refused(rounds, delta):
    with pytest.raises(ValueError, match="rounds|delta"):
        epsilon(noise_multiplier=1.0, rounds=rounds, delta=delta)
