"""MicroBatcher: concurrent callers share one call of the batch function, each gets its own result.

.venv/bin/python -m pytest tests/core_model/test_batching.py -q
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core_model.batching import MicroBatcher


def test_each_caller_gets_the_result_of_its_own_item():
    batcher = MicroBatcher(lambda items: [item * 10 for item in items])
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(batcher, range(40))) == [i * 10 for i in range(40)]


def test_callers_that_arrive_while_a_batch_runs_share_the_next_one():
    release, sizes = threading.Event(), []

    def slow(items):
        sizes.append(len(items))
        release.wait(timeout=5)
        return items

    batcher = MicroBatcher(slow, max_batch=16)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(batcher, 0)]
        while not sizes:  # the first batch is running and blocked
            threading.Event().wait(0.01)
        futures += [pool.submit(batcher, i) for i in range(1, 6)]
        threading.Event().wait(0.2)
        release.set()
        assert sorted(f.result() for f in futures) == list(range(6))
    assert sizes == [1, 5]


def test_an_error_reaches_every_caller_of_the_batch_and_the_worker_goes_on():
    def fail_on_negative(items):
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return items

    batcher = MicroBatcher(fail_on_negative)
    with pytest.raises(ValueError, match="negative"):
        batcher(-1)
    assert batcher(3) == 3


def test_the_worker_sets_its_own_torch_threads_and_leaves_the_callers():
    import torch

    before = torch.get_num_threads()
    batcher = MicroBatcher(lambda items: [torch.get_num_threads() for _ in items], torch_threads=1)
    assert batcher(0) == 1
    assert torch.get_num_threads() == before
