"""A site's round without the network: the reply holds the trained adapter and head tensors under
the names it received, counts and metrics; evaluation counts pool exactly across sites."""

import torch
from flwr.app import RecordDict

from core_model.train.metrics import span_scores
from federated.server import payload_bytes, pool_evaluations
from federated.site import ARRAYS, CONFIG, METRICS, SITE, from_record, local_evaluate, local_train, to_record


def message_config(task, **round_settings):
    return {**task.to_config(), "server-round": 1, **round_settings}


def test_a_round_at_a_site_returns_trained_tensors_and_counts(task, sites):
    model = task.build()
    start = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" in k or k.startswith("head.")}
    reply = local_train(sites[0], to_record(start), message_config(task, lr=task.lr))
    assert set(reply.keys()) == {ARRAYS, METRICS, SITE}
    trained = from_record(reply[ARRAYS])
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in start)
    assert dict(reply[METRICS])["num-examples"] == len(sites[0].train)
    assert dict(reply[SITE]) == {"name": "north"}
    assert payload_bytes(reply[ARRAYS]) == sum(v.numel() * 4 for v in start.values())  # float32


def test_site_evaluations_pool_to_the_scores_of_all_their_records(task, sites):
    arrays = to_record(
        {k: v for k, v in task.build().state_dict().items() if ".lora_" in k or k.startswith("head.")}
    )
    replies = [local_evaluate(site, arrays, message_config(task)) for site in sites]
    pooled = dict(pool_evaluations([RecordDict({"m": r[METRICS]}) for r in replies], "num-examples"))
    counts = [dict(r[METRICS]) for r in replies]
    assert pooled["num-examples"] == sum(len(s.evaluation) for s in sites)
    assert pooled["gold_entities"] == sum(c["gold_entities"] for c in counts)
    expected = span_scores(
        matched=sum(c["matched_entities"] for c in counts),
        predicted=sum(c["predicted_entities"] for c in counts),
        gold=sum(c["gold_entities"] for c in counts),
    )
    assert pooled["f1"] == expected["f1"]
    assert CONFIG not in replies[0]
