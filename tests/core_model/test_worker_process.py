"""WorkerProcess: a batch function built and run in a process of its own, over pipes.

.venv/bin/python -m pytest tests/core_model/test_worker_process.py -q
"""

import os
import subprocess
import sys
import time

import pytest

from core_model.worker_process import WorkerDied, WorkerProcess

# Factories the workers import (module-level, by name).


def scaler(factor):
    def scale(items):
        if "exit" in items:
            os._exit(3)  # dies mid-request, as a worker killed for memory would
        if "bad" in items:
            raise KeyError("bad is not a number")
        print("noise on stdout")  # must not reach the replies
        return [(os.getpid(), item * factor) for item in items]

    return scale


def broken_factory(path):
    raise FileNotFoundError(f"no adapter in {path}")


@pytest.fixture
def worker():
    worker = WorkerProcess(scaler, 3, name="test-scaler", torch_threads=None)
    yield worker
    worker.close()


def test_the_function_is_built_and_called_in_another_process(worker):
    worker.wait_ready()
    replies = worker([1, 2, 5])
    assert [value for _, value in replies] == [3, 6, 15]
    assert {pid for pid, _ in replies} != {os.getpid()}
    assert worker(["ab"])[0][1] == "ababab"  # the same function, kept between calls


def test_a_factory_error_is_raised_with_its_own_type_and_message():
    worker = WorkerProcess(broken_factory, "/nowhere", name="test-broken", torch_threads=None)
    with pytest.raises(FileNotFoundError, match="no adapter in /nowhere"):
        worker.wait_ready()


def test_a_call_error_reaches_its_caller_and_the_worker_serves_on(worker):
    with pytest.raises(KeyError, match="bad is not a number"):
        worker([1, "bad"])
    assert worker([2])[0][1] == 6


def test_a_dead_worker_fails_its_request_and_the_next_call_starts_a_new_one(worker):
    first_pid = worker([1])[0][0]
    with pytest.raises(WorkerDied, match="test-scaler worker exited with code 3"):
        worker(["exit"])
    pid, value = worker([4])[0]
    assert value == 12 and pid != first_pid


def test_a_nested_function_is_refused_before_any_process_starts():
    def local_factory():
        return len

    with pytest.raises(ValueError, match="not a module-level function"):
        WorkerProcess(local_factory, name="test-local")


def test_the_worker_exits_when_its_parent_is_killed(tmp_path):
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from core_model.worker_process import WorkerProcess\n"
            "from tests.core_model.test_worker_process import scaler\n"
            "w = WorkerProcess(scaler, 2, name='orphan', torch_threads=None)\n"
            "print(w([1])[0][0], flush=True)\n"
            "import time; time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
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
