"""The federation's contract: a FederatedTask travels as plain config values and comes back equal;
run configs override by name and unknown settings are refused."""

import pytest

from federated.server import ServerSettings, round_lr, split_run_config
from federated.task import FederatedTask

from .conftest import LABELS


def test_a_task_survives_the_trip_through_a_config_record():
    task = FederatedTask(labels=LABELS, rank=4, targets=("o_proj",), bidirectional=False, lr=0.01)
    config = task.to_config()
    assert all(isinstance(v, (str, int, float, bool, list)) for v in config.values())
    assert FederatedTask.from_config(config) == task


def test_a_run_config_overrides_task_and_server_by_name():
    task, settings = FederatedTask(labels=LABELS), ServerSettings()
    run_config = {
        "rounds": 3,
        "strategy": "fedprox",
        "local-epochs": 2,
        "labels": "B-X,I-X,O",
        "dp_noise": 0.5,
    }
    new_task, new_settings = split_run_config(run_config, task, settings)
    assert (new_settings.rounds, new_settings.strategy, new_settings.dp_noise) == (3, "fedprox", 0.5)
    assert new_task.local_epochs == 2 and new_task.labels == ("B-X", "I-X", "O")
    assert new_task.rank == task.rank


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"labels": "O", "rank": 2}, "at least 2 labels"),
        ({"labels": "B-X,O", "ranks": 2}, "unknown federated task setting 'ranks'"),
        ({"labels": "B-X,O", "task": "lm"}, "unknown federated task 'lm'"),
        ({"labels": "B-X,O", "local-epochs": 0}, "local_epochs must be >= 1"),
    ],
)
def test_bad_settings_are_refused_by_name(config, message):
    with pytest.raises(ValueError, match=message):
        FederatedTask.from_config(config)


def test_bad_server_settings_are_refused():
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'"):
        ServerSettings(strategy="fedsgd")
    with pytest.raises(ValueError, match="server_lr must be > 0"):
        ServerSettings(server_lr=0.0)


def test_the_sites_learning_rate_decays_over_the_rounds():
    task = FederatedTask(labels=LABELS, lr=0.01)
    rates = [round_lr(task, r, 5) for r in range(1, 6)]
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.001)
    assert rates == sorted(rates, reverse=True)
