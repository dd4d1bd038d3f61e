"""``lancequeue bench`` on a small load, through the CLI, as a user runs it: its own
redis-server, the writer and producers as real processes. No assertion on speed."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from lancequeue.bench.settings import STOP_TIMEOUT_S
from lancequeue.bench.thread_cpu import GROUPS
from tests.support import INTERRUPTIBLE_CLI, cli_env, run_cli, wait_for


def _processes_mentioning(path: Path) -> list[str]:
    """Command lines of running processes that name a file under ``path`` (the benchmark's
    children all do: databases, logs, results)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(cmdline)
    return found


def test_compare_runs_the_four_systems_and_finds_every_record_once_in_the_table(
    tmp_path: Path,
) -> None:
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    done = run_cli(
        *("bench", "--producers", "2", "--records", "600", "--dim", "8", "--compare"),
        *("--naive-records", "50", "--out", str(out), "--chart", str(chart)),
        *("--workdir", str(tmp_path)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {"naive", "in_process", "limit", "lancequeue"}
    assert all(system["rows_per_s"] > 0 for system in report["systems"].values())
    end_to_end = report["systems"]["lancequeue"]
    assert end_to_end["check"] == {
        "expected_rows": 600,
        "rows": 600,
        "duplicates": 0,
        "missing": 0,
        "unexpected": 0,
        "ok": True,
    }
    assert end_to_end["batches"] > 0 and end_to_end["latency"]["p99_ms"] > 0
    assert end_to_end["mean_append_ms"] > 0
    assert report["systems"]["naive"]["table_rows"] == 50
    assert report["machine"]["cpu_count"] > 0 and report["problems"] == []
    assert "measured on the first 50 rows" in done.stdout
    assert "the table holds exactly 600 rows" in done.stdout
    for system, rows in (("lancequeue", 600), ("naive", 50)):
        storage = report["systems"][system]["storage"]
        written, compacted = storage["written"], storage["compacted"]
        assert written["rows"] == compacted["rows"] == rows
        for figures in (written, compacted):
            assert figures["scan_ms"] > 0 and figures["search_p50_ms"] > 0
            assert figures["fragments"] >= 1
        assert compacted["fragments"] <= written["fragments"]
    assert "storage shape" in done.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert chart.stat().st_size > 0
    assert not list(tmp_path.glob("lancequeue-bench-*")), "the temporary directory is left"
    assert _processes_mentioning(tmp_path) == []


def test_sweep_reports_the_writer_s_memory_at_each_record_count(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    workdir = tmp_path / "not" / "made" / "yet"  # made as --out would be
    done = run_cli(
        *("bench", "--producers", "1", "--dim", "8", "--sweep", "200,400"),
        *("--out", str(out), "--chart", str(tmp_path / "sweep.png")),
        *("--workdir", str(workdir), "--keep"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [path.name[: len("lancequeue-bench-")] for path in workdir.iterdir()] == [
        "lancequeue-bench-"
    ]
    sweep = json.loads(out.read_text())["sweep"]
    assert [run["records"] for run in sweep] == [200, 400]
    assert all(run["check"]["ok"] and run["peak_rss_bytes"] > 0 for run in sweep)
    assert "writer peak RSS MiB" in done.stdout


@pytest.mark.parametrize("pattern", ["loop", "async-loop"])
def test_producers_can_run_the_plain_loop_a_user_writes_first(tmp_path: Path, pattern: str) -> None:
    out = tmp_path / "bench.json"
    done = run_cli(
        *("bench", "--producers", "2", "--records", "400", "--dim", "8"),
        *("--producer-pattern", pattern, "--out", str(out)),
        *("--chart", str(tmp_path / "b.png"), "--workdir", str(tmp_path)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())["systems"]["lancequeue"]
    assert result["check"]["ok"] and result["records"] == 400
    # one record in 16 is timed, of every producer: latencies come from that sample
    assert result["latency"]["count"] == 2 * len(range(0, 200, 16))
    assert 0 < result["latency"]["p50_ms"] <= result["latency"]["p99_ms"]
    assert "a plain loop of" in done.stdout and "per record: producers" in done.stdout


def test_drain_and_producer_modes_time_each_side_alone_and_check_every_row(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    done = run_cli(
        *("bench", "--producers", "1", "--records", "300", "--dim", "8", "--drain", "32,64"),
        *("--producer-mode", "async-loop", "--producer-mode", "many", "--out", str(out)),
        *("--chart", str(tmp_path / "b.png"), "--workdir", str(tmp_path)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert [drain["batch"] for drain in report["drains"]] == [32, 64]
    for drain in report["drains"]:
        writer = drain["lancequeue"]
        assert writer["check"]["ok"] and writer["cpu_s_window"] > 0
        assert writer["batches"] >= 300 // drain["batch"]  # the batches were of that size
        split = writer["cpu_split_s"]  # by thread, adding up to the process's CPU
        assert list(split) == list(GROUPS) and split["event loop"] > 0
        assert sum(split.values()) == pytest.approx(writer["cpu_s_window"], abs=0.2)
        for baseline in ("arrow", "dicts"):
            assert drain[baseline]["table_rows"] == 300 and drain[baseline]["cpu_s_window"] > 0
    assert [run["pattern"] for run in report["patterns"]] == ["async-loop", "many"]
    assert all(run["check"]["ok"] and run["producers"] == 1 for run in report["patterns"])
    assert "Drain: the writer alone" in done.stdout and "Producer mode" in done.stdout
    assert "Where the writer's CPU went, by thread" in done.stdout
    assert _processes_mentioning(tmp_path) == []


def test_an_unknown_producer_mode_or_a_batch_size_of_zero_is_a_usage_error() -> None:
    done = run_cli("bench", "--drain", "128,0")
    assert done.returncode == 2 and "drain batch size must be positive" in done.stderr
    done = run_cli("bench", "--producer-mode", "burst")
    assert done.returncode == 2 and "burst" in done.stderr


def test_a_paced_rate_is_for_enqueue_many_only() -> None:
    done = run_cli("bench", "--producer-pattern", "loop", "--rate", "100")
    assert done.returncode == 2 and "--rate paces --producer-pattern many only" in done.stderr


def _start_a_long_run(tmp_path: Path) -> subprocess.Popen[str]:
    """A run paced to last minutes, once its records are flowing."""
    command = [*INTERRUPTIBLE_CLI, "bench", "--producers", "2", "--records", "200000"]
    command += ["--dim", "8"]
    command += ["--rate", "1000", "--workdir", str(tmp_path), "--out", str(tmp_path / "b.json")]
    bench = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    try:
        # The writer's first flush creates the table: records are flowing.
        wait_for(
            lambda: any(tmp_path.glob("lancequeue-bench-*/lancequeue/db/bench.lance/_versions")),
            60,
            "the first flush",
        )
    except BaseException:
        bench.kill()
        bench.communicate()
        raise
    return bench


@pytest.mark.timeout(4 * STOP_TIMEOUT_S + 90)
def test_ctrl_c_stops_the_benchmark_and_every_process_it_started(tmp_path: Path) -> None:
    bench = _start_a_long_run(tmp_path)
    bench.send_signal(signal.SIGINT)
    # Each of its 4 children (2 producers, the writer, redis-server) may take up to
    # STOP_TIMEOUT_S to exit before it is killed.
    try:
        output, _ = bench.communicate(timeout=4 * STOP_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        bench.kill()
        output, _ = bench.communicate()
        raise AssertionError(f"the benchmark did not stop after Ctrl-C:\n{output}") from None
    assert bench.returncode != 0, output
    assert _processes_mentioning(tmp_path) == []
    assert not list(tmp_path.glob("lancequeue-bench-*"))


def test_a_killed_benchmark_leaves_no_process_behind(tmp_path: Path) -> None:
    bench = _start_a_long_run(tmp_path)
    bench.kill()
    bench.communicate(timeout=60)
    wait_for(lambda: _processes_mentioning(tmp_path) == [], 60, "its children to exit")


def test_an_unknown_writer_option_is_a_usage_error() -> None:
    done = run_cli("bench", "--writer-option", "no-such-option=1")
    assert done.returncode == 2
    assert "unknown writer option --no-such-option" in done.stderr
