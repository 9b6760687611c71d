"""Federated training of adapters and task heads with Flower: generic, no hospital or label
knowledge (a vertical brings its task, its records and its names).

    task = FederatedTask(labels=("B-Disease", "I-Disease", "O"))     # task.py: what all nodes share
    server = coordinator_app(task, ServerSettings(adapter="medical"))  # server.py: the ServerApp
    client = site_app(load_site)                                       # site.py: the ClientApp

Modules: `task` (the federation's contract), `site` (local training and evaluation through the
training loop, replies with adapter and head tensors, counts and metrics only), `server` (FedAvg /
FedProx, server-side DP, round records, publication to the adapter registry), `secure` (SecAgg+
through Flower's legacy workflow), `privacy` (the epsilon server-side DP spends), `records` (runs
and rounds in SQL), `deploy` (certificates, node keys, SuperLink / SuperNode command lines).
"""
