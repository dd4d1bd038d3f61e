"""Child processes of the benchmark: start them, reap them with their resource usage, and stop
every one of them on the way out (Ctrl-C included): SIGTERM, then SIGKILL after a timeout.

On Linux each child also asks the kernel for SIGTERM when the benchmark dies
(``PR_SET_PDEATHSIG``), so even a benchmark killed with SIGKILL leaves no orphan running.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from lancequeue.bench.settings import STOP_TIMEOUT_S

_REAP_POLL_S = 0.02  # os.wait4 has no timeout: poll with WNOHANG
_KILL_WAIT_S = 5.0

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Runs before the child's program: asks for SIGTERM when the parent dies, exits if the parent is
# already gone (it may have died before the request), then becomes the program (execvp keeps
# the pid and the request).
_DEATH_SIGNAL_LAUNCHER = (
    "import ctypes, os, sys\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)

Process = subprocess.Popen[bytes]


def guarded(command: Sequence[str]) -> list[str]:
    """``command``, started so that it gets SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-c", _DEATH_SIGNAL_LAUNCHER, str(os.getpid()), *command]


def start_process(
    command: Sequence[str], log: Path, stdin: int | IO[bytes] | None = subprocess.DEVNULL
) -> Process:
    """Start ``command`` with stdout and stderr in ``log``, in a session of its own, so a
    Ctrl-C in the terminal reaches the benchmark alone and it stops its children in order."""
    with open(log, "ab") as log_file:
        return subprocess.Popen(
            guarded(command),
            stdin=stdin,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def reap(process: Process, timeout_s: float) -> resource.struct_rusage | None:
    """Wait up to ``timeout_s`` for ``process`` to exit, reaping it with ``os.wait4`` so its
    resource usage (CPU seconds, the kernel's RSS high-water mark) is known. The usage, or None
    if it did not exit in time or was reaped elsewhere."""
    if process.returncode is not None:
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (subprocess does it on poll/wait)
            process.poll()
            return None
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            return None
        time.sleep(_REAP_POLL_S)  # poll: wait4 cannot wait with a timeout


def stop_process(
    process: Process | None, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S
) -> resource.struct_rusage | None:
    """Send ``sig``, wait up to ``timeout_s``, then SIGKILL. The resource usage if reaped here."""
    if process is None or process.returncode is not None:
        return None
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    usage = reap(process, timeout_s)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        usage = reap(process, _KILL_WAIT_S)
        if process.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_KILL_WAIT_S)
    return usage


def vm_hwm_bytes(pid: int) -> int | None:
    """The RSS high-water mark of process ``pid`` itself (``VmHWM``; Linux), in bytes, or None
    if it cannot be read. ``ru_maxrss`` also counts what the process's ``fork`` copied from
    its parent: a benchmark process holding 600 MiB gives every child at least that."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def maxrss_bytes(usage: resource.struct_rusage | None, own: int | None = None) -> int | None:
    """The process's RSS high-water mark: ``own`` (its ``VmHWM``, see ``vm_hwm_bytes``) when
    known, else the kernel's in ``usage`` (Linux reports KiB, macOS bytes)."""
    if own is not None:
        return own
    if usage is None:
        return None
    return usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024


def cpu_s(usage: resource.struct_rusage | None) -> float | None:
    """User plus system CPU seconds in ``usage``."""
    return None if usage is None else usage.ru_utime + usage.ru_stime


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C while children are being stopped (each stop is bounded by timeouts), so a
    second Ctrl-C cannot leave orphans behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Children:
    """The child processes of one run, stopped in reverse order of start on exit.

    ``add(process, sig)`` registers a process with the signal that stops it gracefully; on exit
    every one still running gets that signal, then SIGKILL after ``STOP_TIMEOUT_S``.
    """

    def __init__(self) -> None:
        self._processes: list[tuple[Process, int]] = []

    def add(self, process: Process, sig: int = signal.SIGTERM) -> Process:
        """Register ``process``; return it."""
        self._processes.append((process, sig))
        return process

    def stop_all(self) -> None:
        """Stop every registered process still running, the last started first."""
        with _no_interrupts():
            for process, sig in reversed(self._processes):
                stop_process(process, sig)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
