"""The sandbox: limits, isolation and the guard against destructive calls, one fact per test.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/code_assist/test_sandbox.py -q
"""

from pathlib import Path

from apps.code_assist.sandbox import TAIL_CHARS, run_program


def test_a_program_that_exits_cleanly_passes():
    result = run_program("assert sum(range(4)) == 6\n")
    assert (result.status, result.exit_code) == ("passed", 0)


def test_a_failing_assert_fails_with_its_traceback():
    result = run_program("assert 1 + 1 == 3\n")
    assert result.status == "failed"
    assert result.stderr_tail.rstrip().endswith("AssertionError")


def test_an_infinite_loop_is_stopped_by_the_timeout():
    result = run_program("while True:\n    pass\n", timeout_s=1)
    assert result.status == "timeout"
    assert result.seconds < 5


def test_the_child_runs_under_the_cpu_memory_file_and_core_limits():
    program = "print(open('/proc/self/limits').read())"
    limits = run_program(program, timeout_s=3, memory_mb=512, max_file_mb=2).stdout_tail
    rows = {line[:26].strip(): line[26:].split()[:2] for line in limits.splitlines()[1:]}
    assert rows["Max cpu time"] == ["3", "4"]
    assert rows["Max address space"] == [str(512 * 2**20)] * 2
    assert rows["Max file size"] == [str(2 * 2**20)] * 2
    assert rows["Max core file size"] == ["0", "0"]


def test_a_huge_allocation_is_a_memory_error():
    assert run_program("x = bytearray(10**10)\n").status == "memory"


def test_a_growing_list_is_stopped_by_the_memory_limit():
    program = "chunks = []\nwhile True:\n    chunks.append(bytearray(2**20))\n"
    result = run_program(program, memory_mb=256, timeout_s=20)
    assert result.status == "memory"
    assert result.seconds < 10


def test_writing_a_huge_file_is_stopped_by_the_file_size_limit():
    program = "with open('big.bin', 'wb') as file:\n    file.write(bytes(3 * 2**20))\n"
    result = run_program(program, max_file_mb=1)
    assert result.status == "failed"
    assert "File too large" in result.stderr_tail


def test_the_program_sees_no_variable_of_the_parent(monkeypatch):
    monkeypatch.setenv("VERTICALS_API_KEY", "sk-secret")
    result = run_program("import os\nprint(os.environ)\nassert 'VERTICALS_API_KEY' not in os.environ\n")
    assert result.status == "passed"
    assert "sk-secret" not in result.stdout_tail


def test_the_working_directory_is_removed_afterwards():
    result = run_program("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())\n")
    workdir = Path(result.stdout_tail.strip())
    assert workdir.name.startswith("verticals-sandbox-")
    assert not workdir.exists()


def test_a_call_to_os_system_fails_instead_of_running(tmp_path):
    marker = tmp_path / "ran"
    result = run_program(f"import os\nos.system('touch {marker}')\n")
    assert result.status == "failed"
    assert not marker.exists()


def test_destructive_functions_are_disabled():
    disabled = "os.kill os.remove os.rmdir os.fork os.unlink shutil.rmtree subprocess.Popen subprocess.run"
    program = "import os, shutil, subprocess\n" + "".join(f"assert {f} is None\n" for f in disabled.split())
    assert run_program(program).status == "passed"


def test_only_the_tail_of_a_flood_of_output_is_kept():
    result = run_program("print('x' * 2**20)\nprint('end')\n")
    assert result.status == "passed"
    assert len(result.stdout_tail) == TAIL_CHARS
    assert result.stdout_tail.endswith("end\n")
