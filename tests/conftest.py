"""Shared test settings: fast, deterministic, CPU.  Run everything with `make test`."""

import torch

torch.set_num_threads(2)
