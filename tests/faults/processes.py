"""The processes a fault test runs: ``lancequeue writer`` daemons and load producers."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from tests.support import CLI, FAULT_VARIABLES, cli_env, fault_args, process_stopped

_LOG_TAIL_CHARS = 6000


def lancequeue_command() -> list[str]:
    """The ``lancequeue`` console script of this interpreter's environment (else the CLI
    through this interpreter)."""
    script = shutil.which("lancequeue", path=str(Path(sys.executable).parent))
    return [script] if script else list(CLI)


def clean_env(**extra: str) -> dict[str, str]:
    """The tests' subprocess environment with no fault hook unless given here."""
    env = cli_env()
    for name in FAULT_VARIABLES:
        env.pop(name, None)
    env.update(extra)
    return env


class LoggedProcess:
    """A subprocess whose output goes to a log file."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stopped(self) -> bool:
        """Whether the process is stopped by a signal (SIGSTOP)."""
        return process_stopped(self.pid)

    def signal(self, signum: int) -> None:
        if self.running():
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) still running after {timeout}s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> int:
        """SIGKILL, and reap it."""
        self.signal(signal.SIGKILL)
        return self.process.wait(30)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return f"--- {self.log_path.name} (tail) ---\n{self.log()[-_LOG_TAIL_CHARS:]}"

    def close(self) -> None:
        """Kill it if still running; close its log."""
        if self.running():
            self.kill()
        self._log.close()


class WriterDaemon(LoggedProcess):
    """``lancequeue -v writer ...`` as a subprocess."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_path: Path,
        crash_at: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        extra = dict(env or {})
        if crash_at:
            extra["LANCEQUEUE_CRASH_AT"] = crash_at
        env = clean_env(**extra)
        command = [*lancequeue_command(), "-v", "writer", *fault_args(env), *args]
        super().__init__(name, command, log_path, env)
        self.crash_at = crash_at


class LoadProcess(LoggedProcess):
    """One ``python -m tests.faults.load`` producer process."""

    def __init__(
        self,
        index: int,
        redis_url: str,
        table: str,
        directory: Path,
        stop_file: Path,
        rate: float,
        timeout_s: float,
        seed: int,
        options: list[str] | None = None,
    ) -> None:
        self.index = index
        self.first_id = (index + 1) * 10_000_000
        self.outcomes = directory / f"outcomes-{index}.jsonl"
        command = [
            sys.executable,
            "-m",
            "tests.faults.load",
            "--redis",
            redis_url,
            "--table",
            table,
            "--first-id",
            str(self.first_id),
            "--out",
            str(self.outcomes),
            "--stop-file",
            str(stop_file),
            "--rate",
            str(rate),
            "--timeout-s",
            str(timeout_s),
            "--seed",
            str(seed + index),
            *(options or []),
        ]
        super().__init__(
            f"producer {index}", command, directory / f"producer-{index}.log", clean_env()
        )


def exit_status(process: LoggedProcess, timeout: float) -> int | None:
    """``process``'s exit status once it exits, or None if it had to be killed after
    ``timeout``."""
    try:
        return process.wait(timeout)
    except AssertionError:
        process.kill()
        return None
