"""The reasons a score comes with: the features that raised it most, and the earlier events the
transaction's attention weighed most.

.venv/bin/python -m pytest tests/apps/finance_risk/test_reasons.py -q
"""

from apps.finance_risk.features import FEATURES
from apps.finance_risk.live_history import Event
from apps.finance_risk.scorer import TOP_REASONS, attended_events, feature_reasons


def test_the_attended_events_are_the_most_weighed_of_the_history_in_falling_weight():
    history = [Event(f"t{i}", 1_535_760_000.0 + 60 * i, 10.0 * i, ()) for i in range(5)]
    # 2 padding positions, the 5 earlier events, then the transaction's own token
    weights_T = [0.0, 0.0, 0.05, 0.30, 0.05, 0.20, 0.30, 0.10]
    events = attended_events(history, weights_T)
    assert [e["transaction_id"] for e in events] == ["t1", "t4", "t3"]  # equal weights: the earlier first
    assert [e["weight"] for e in events] == [0.3, 0.3, 0.2]
    assert events[0]["amount"] == 10.0 and events[0]["timestamp"] == "2018-09-01T00:01:00+00:00"
    assert attended_events([], [0.0, 1.0]) == []


def test_the_feature_reasons_are_the_positive_contributions_largest_first():
    features_A = [float(i) for i in range(len(FEATURES))]
    scores_P = [0.5] + [0.5] * len(FEATURES)
    scores_P[1 + 3], scores_P[1 + 7], scores_P[1 + 9] = 0.2, 0.4, 0.6  # feature 9 lowered the score
    reasons = feature_reasons(features_A, scores_P)
    assert [r["feature"] for r in reasons] == [FEATURES[3], FEATURES[7]]  # no zero or negative ones
    assert reasons[0] == {"feature": FEATURES[3], "value": 3.0, "contribution": 0.3}
    assert len(feature_reasons(features_A, [1.0] + [0.0] * len(FEATURES))) == TOP_REASONS
