"""BatchingWorker: items sent one by one to a process of its own, which batches whatever has
arrived each time it is free.

.venv/bin/python -m pytest tests/core_model/test_batching_worker.py -q
"""

import os
import subprocess
import sys
import threading
import time

import pytest

from core_model.batching_worker import BatchingWorker
from core_model.worker_process import WorkerDied

SLOW_S = 1.0  # how long the "slow" item holds the worker: the items sent meanwhile wait


# Factories the workers import (module-level, by name).


def batch_reporter(factor):
    def run(items):
        if "exit" in items:
            os._exit(3)  # dies mid-batch, as a worker killed for memory would
        if "bad" in items:
            raise KeyError("bad is not a number")
        if "slow" in items:
            time.sleep(SLOW_S)
        print("noise on stdout")  # must not reach the answers
        return [(os.getpid(), len(items), item * factor) for item in items]

    return run


def slow_echo(seconds):
    def run(items):
        time.sleep(seconds)  # a model's pass: items keep arriving meanwhile
        return [item * 3 for item in items]

    return run


def broken_factory(path):
    raise FileNotFoundError(f"no model in {path}")


@pytest.fixture
def worker():
    worker = BatchingWorker(batch_reporter, 3, name="test-batches", max_batch=2, torch_threads=None)
    worker.wait_ready()
    yield worker
    worker.close()


def test_each_item_gets_its_own_result_from_another_process(worker):
    pid, _, value = worker(5)
    assert value == 15 and pid != os.getpid()
    assert worker("ab")[2] == "ababab" and worker(1)[0] == pid  # the same worker, kept


def test_items_sent_while_the_worker_is_busy_run_together_at_most_max_batch_at_a_time(worker):
    slow = worker.submit("slow")
    time.sleep(SLOW_S / 3)  # the worker is inside the slow batch now
    waiting = [worker.submit(i) for i in range(5)]
    assert slow.result()[1] == 1
    answers = [future.result() for future in waiting]
    assert [value for _, _, value in answers] == [0, 3, 6, 9, 12]  # each its own, in order
    assert [size for _, size, _ in answers] == [2, 2, 2, 2, 1]  # max_batch 2: three batches


def test_submitting_to_a_busy_worker_returns_at_once_even_past_64_kb(worker):
    slow = worker.submit("slow")
    time.sleep(SLOW_S / 3)
    started = time.monotonic()
    big = worker.submit("x" * 300_000)  # past a default pipe's 64 kB: the worker reads it later
    assert time.monotonic() - started < SLOW_S / 3
    slow.result()
    assert big.result()[2] == "x" * 900_000


def test_items_submitted_faster_than_the_worker_reads_them_all_come_back():
    # 3 MB of items from one thread, batches of 64 taking 20 ms and answered with 192 kB each: the
    # item pipe (1 MB) fills during a batch, the answer pipe (64 kB) with each answer, and neither
    # side may wait for the other.
    worker = BatchingWorker(slow_echo, 0.02, name="test-flood", max_batch=64, torch_threads=None)
    futures: list = []
    sender = threading.Thread(
        target=lambda: futures.extend(worker.submit("x" * 1_000) for _ in range(3_000)), daemon=True
    )
    try:
        sender.start()
        sender.join(timeout=60)
        assert not sender.is_alive(), "submit blocked for good"
        assert all(future.result(timeout=60) == "x" * 3_000 for future in futures)
    finally:
        worker.close()


def test_an_error_fails_every_item_of_its_batch_and_the_worker_serves_on(worker):
    slow = worker.submit("slow")
    time.sleep(SLOW_S / 3)
    together = [worker.submit(1), worker.submit("bad")]
    slow.result()
    for future in together:
        with pytest.raises(KeyError, match="bad is not a number"):
            future.result()
    assert worker(2)[2] == 6


def test_a_dead_worker_fails_the_items_it_held_and_the_next_item_starts_a_new_one(worker):
    first_pid = worker(1)[0]
    with pytest.raises(WorkerDied, match="test-batches worker exited with code 3"):
        worker("exit")
    pid, _, value = worker(4)
    assert value == 12 and pid != first_pid


def test_a_factory_error_reaches_wait_ready_and_the_items_sent_with_its_own_type():
    worker = BatchingWorker(broken_factory, "/nowhere", name="test-broken", torch_threads=None)
    early = worker.submit(1)  # sent before the worker found it cannot build
    with pytest.raises(FileNotFoundError, match="no model in /nowhere"):
        worker.wait_ready()
    with pytest.raises(FileNotFoundError, match="no model in /nowhere"):
        early.result(timeout=30)
    worker.close()


def test_bad_settings_are_refused_before_any_process_starts():
    def local_factory():
        return len

    with pytest.raises(ValueError, match="not a module-level function"):
        BatchingWorker(local_factory, name="test-local")
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        BatchingWorker(batch_reporter, 1, name="test-zero", max_batch=0)
    with pytest.raises(ValueError, match="linger_s must be >= 0"):
        BatchingWorker(batch_reporter, 1, name="test-linger", linger_s=-1)


def test_after_a_batch_of_n_the_worker_lingers_for_n_items_and_a_lone_one_runs_alone():
    linger_s = SLOW_S / 2
    worker = BatchingWorker(
        batch_reporter, 1, name="test-linger", max_batch=8, linger_s=linger_s, torch_threads=None
    )
    try:
        assert worker(1)[1] == 1  # the last batch held one: no lingering
        slow = worker.submit("slow")
        time.sleep(SLOW_S / 3)
        pair = [worker.submit(2), worker.submit(3)]  # queued behind "slow": a batch of 2
        slow.result()
        assert [future.result()[1] for future in pair] == [2, 2]
        first = worker.submit(4)
        time.sleep(linger_s / 5)  # the second caller comes back a little later ...
        second = worker.submit(5)
        assert [first.result()[1], second.result()[1]] == [2, 2]  # ... and shares the first's batch
        started = time.monotonic()
        assert worker(6)[1] == 1  # alone: waited for a second that never came
        waited = time.monotonic() - started
        started = time.monotonic()
        assert worker(7)[1] == 1  # after a batch of one, no waiting
        assert waited >= linger_s * 0.9 and time.monotonic() - started < linger_s / 2
    finally:
        worker.close()


def test_the_worker_exits_when_its_caller_is_killed():
    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from core_model.batching_worker import BatchingWorker\n"
            "from tests.core_model.test_batching_worker import batch_reporter\n"
            "w = BatchingWorker(batch_reporter, 2, name='orphan', torch_threads=None)\n"
            "print(w(1)[0], flush=True)\n"
            "import time; time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker_pid = int(caller.stdout.readline())
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 10
    while running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(worker_pid)


def running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (an exited orphan may stay a zombie here)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
