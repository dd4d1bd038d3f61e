"""The benchmark's report: text tables for the terminal and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {
    "naive": "(a) naive add([row])",
    "in_process": "(b) in-process coalescing",
    "limit": "(c) limit: add(batch)",
    "lancequeue": "(d) lancequeue end to end",
}
"""How each system is named in tables and charts."""
BYTES_PER_MIB = 1024 * 1024
"""MiB in memory figures."""


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / BYTES_PER_MIB:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    head = line(header)
    return "\n".join([head, "-" * len(head), *(line(row) for row in rows)])


def systems_table(systems: dict[str, dict[str, Any]]) -> str:
    """One row per system: throughput, its ratio to (c), latency, memory, versions."""
    limit = systems.get("limit", {}).get("rows_per_s")
    rows = []
    for name, result in systems.items():
        latency = result.get("latency") or {}
        rows.append(
            [
                LABELS[name],
                f"{result['records']:,}",
                _number(result["seconds"], ".2f"),
                _number(result["rows_per_s"], ",.0f"),
                f"{result['rows_per_s'] / limit:.3f}x" if limit else "-",
                _number(result["mb_per_s"], ".1f"),
                _number(latency.get("p50_ms"), ".1f"),
                _number(latency.get("p95_ms"), ".1f"),
                _number(latency.get("p99_ms"), ".1f"),
                _mib(result["peak_rss_bytes"]),
                _mib(result["maxrss_bytes"]),
                str(result["versions"]),
                str(result["fragments"]),
            ]
        )
    header = ["system", "rows", "seconds", "rows/s", "vs (c)", "MB/s", "p50 ms", "p95 ms"]
    header += ["p99 ms", "peak RSS MiB", "HWM MiB", "versions", "fragments"]
    return _table(header, rows)


def baseline_notes(systems: dict[str, dict[str, Any]], records: int, sample_ms: int) -> list[str]:
    """What the baselines' rows mean (measured on how many rows, what their latency is)."""
    notes = []
    naive = systems.get("naive")
    if naive is not None:
        notes.append(
            f"(a) measured on the first {naive['records']:,} rows (a commit, a version and a "
            f"fragment per row); extrapolated at that rate, {records:,} rows would take "
            f"{records / naive['rows_per_s']:,.1f} s (an estimate: each commit adds a version, "
            "so the rate falls as the table grows). Latency: each add([row]) call."
        )
    in_process = systems.get("in_process")
    if in_process is not None:
        notes.append(
            f"(b) {in_process['batches']:,} appends; latency: enqueue to the record's future "
            "resolved, with the concurrent callers all in one process."
        )
    limit = systems.get("limit")
    if limit is not None and limit.get("append"):
        append = limit["append"]
        notes.append(
            f"(c) no per-record callers, so no ack latency: its {limit['batches']:,} appends "
            f"took p50 {append['p50_ms']:.1f} ms, p99 {append['p99_ms']:.1f} ms each."
        )
    notes.append(
        f"peak RSS: sampled every {sample_ms} ms (the writer's for (d)); "
        "HWM: the kernel's high-water mark of the same process (VmHWM)."
    )
    return notes


def _per_record_us(seconds: float | None, records: int) -> str:
    return "n/a" if seconds is None else f"{seconds / records * 1e6:,.0f} µs"


def end_to_end_lines(result: dict[str, Any]) -> list[str]:
    """The end-to-end run in words: batches, memory, where the CPU went, the row check."""
    check = result["check"]
    cpu = result["cpu_s_window"]
    per_record = result["encoded_bytes"] / result["records"]
    mean_batch = result["mean_batch_rows"]
    verdict = (
        f"OK, the table holds exactly {check['expected_rows']:,} rows, every id once"
        if check["ok"]
        else (
            f"FAILED: {check['rows']:,} rows for {check['expected_rows']:,} records; "
            f"{check['duplicates']} duplicates, {check['missing']} missing, "
            f"{check['unexpected']} unexpected"
        )
    )
    writer_cpu = _number(cpu["writer"], ".1f")
    lines = [
        f"lancequeue: {result['records']:,} rows in {result['seconds']:.2f} s = "
        f"{result['rows_per_s']:,.0f} rows/s, {result['mb_per_s']:.1f} MB/s of encoded records "
        f"({per_record:,.0f} B each); all sent after {result['enqueue_seconds']:.2f} s",
        f"  ack latency ms: p50 {_number(result['latency']['p50_ms'], '.1f')}, "
        f"p95 {_number(result['latency']['p95_ms'], '.1f')}, "
        f"p99 {_number(result['latency']['p99_ms'], '.1f')}, "
        f"max {_number(result['latency']['max_ms'], '.1f')}",
        f"  writer: {result['batches']:,} batches, mean {_number(mean_batch, ',.1f')} rows, "
        f"mean append {_number(result['mean_append_ms'], ',.1f')} ms; "
        f"table version {result['table_version']}, {result['versions']:,} versions, "
        f"{result['fragments']:,} fragments",
        f"  RSS MiB: writer peak {_mib(result['peak_rss_bytes'])} sampled "
        f"(kernel high-water mark {_mib(result['maxrss_bytes'])}, "
        f"{_mib(result['writer_idle_rss_bytes'])} idle), "
        f"redis {_mib(result['redis_peak_rss_bytes'])}, "
        f"largest producer {_mib(result['producer_peak_rss_bytes'])}",
        f"  CPU s while the clock ran ({cpu['available']:.1f} available): producers "
        f"{cpu['producers']:.1f}, writer {writer_cpu}, redis {cpu['redis']:.1f}; "
        f"per record: producers {cpu['producers'] / result['records'] * 1e6:,.0f} µs, "
        f"writer {_per_record_us(cpu['writer'], result['records'])}",
        f"  check: {verdict}",
    ]
    if result["rate"] and result["mean_append_ms"] is not None:
        bound_ms = result["coalesce_ms"] + 2 * result["mean_append_ms"]
        p99_ms = result["latency"]["p99_ms"]
        met = p99_ms is not None and p99_ms <= bound_ms
        lines.append(
            f"  latency bound at this load: p99 {_number(p99_ms, '.1f')} ms "
            f"{'<=' if met else '>'} coalesce_ms + 2 x mean append = {bound_ms:.1f} ms"
        )
    if not result["rate"]:
        lines.append(
            "  (producers sent flat out: the latency is mostly waiting in the full queue; "
            "--rate R measures it at a given load)"
        )
    return lines


def pattern_table(patterns: list[dict[str, Any]]) -> str:
    """Producer mode: one row per way of calling, the producer's CPU per record and its rate."""
    calls = {
        "many": "Producer.enqueue_many",
        "loop": "for r in rows: p.enqueue(r)",
        "async-loop": "for r in rows: fut = await p.enqueue(r)",
    }
    lines = [
        "| how the producer calls | records/s | producer CPU µs/record | writer CPU µs/row |",
        "|---|---|---|---|",
    ]
    for result in patterns:
        cpu = result["cpu_s_window"]
        lines.append(
            f"| `{calls[result['pattern']]}` | {result['rows_per_s']:,.0f} "
            f"| {cpu['producers'] / result['records'] * 1e6:,.1f} "
            f"| {_per_record_us(cpu['writer'], result['records'])} |"
        )
    return "\n".join(lines)


def sweep_table(sweep: list[dict[str, Any]]) -> str:
    """One row per record count of ``--sweep``: throughput and the writer's memory."""
    rows = [
        [
            f"{result['records']:,}",
            f"{result['seconds']:.2f}",
            f"{result['rows_per_s']:,.0f}",
            _number(result["latency"]["p99_ms"], ".1f"),
            _mib(result["peak_rss_bytes"]),
            _mib(result["maxrss_bytes"]),
            f"{result['batches']:,}",
            "OK" if result["check"]["ok"] else "FAILED",
        ]
        for result in sweep
    ]
    header = ["records", "seconds", "rows/s", "p99 ms", "writer peak RSS MiB", "HWM MiB"]
    return _table([*header, "batches", "check"], rows)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def storage_tables(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``storage`` figures of every table measured, by the label they are shown under."""
    if report["sweep"]:
        return {
            f"(d) {result['records']:,} records": result["storage"] for result in report["sweep"]
        }
    return {
        LABELS[name]: result["storage"]
        for name, result in report["systems"].items()
        if "storage" in result
    }


def _storage_row(name: str, figures: dict[str, Any], ratios: tuple[str, str]) -> list[str]:
    return [
        name,
        f"{figures['rows']:,}",
        f"{figures['fragments']:,}",
        f"{figures['versions']:,}",
        f"{figures['scan_ms']:,.1f}",
        _number(figures["scan_ms_per_1k_rows"], ",.2f"),
        f"{figures['search_p50_ms']:,.1f}",
        *ratios,
    ]


def _storage_table(tables: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for label, storage in tables.items():
        ratios = (_ratio(storage["scan_ratio"]), _ratio(storage["search_ratio"]))
        rows.append(_storage_row(label, storage["written"], ratios))
        rows.append(_storage_row("  compacted copy", storage["compacted"], ("", "")))
    header = ["table", "rows", "fragments", "versions", "scan ms", "scan ms/1k rows"]
    header += ["search p50 ms", "scan vs copy", "search vs copy"]
    return [line.rstrip() for line in _table(header, rows).splitlines()]


def storage_lines(report: dict[str, Any]) -> list[str]:
    """The storage-shape section: each measured table as written and its compacted copy, two
    rows each (fragments, versions, scan and search times, as-written / copy ratios), then
    how they were measured and what the tables hold."""
    tables = storage_tables(report)
    method = next(iter(tables.values()))["method"]
    lines = [
        "storage shape: each table as written and a compacted copy of it, read after its "
        "writers exited (in no figure above)",
        *_storage_table(tables),
        f"  scan: {method['scan']}; search: {method['search']}",
        f"  compacted copy: {method['compacted']}; vs copy: as written / compacted copy",
    ]
    naive = report["systems"].get("naive")
    if naive is not None:
        lines.append(
            f"  (a) holds only the first {naive['table_rows']:,} rows, (d) "
            f"{report['systems']['lancequeue']['table_rows']:,}: set (a) against its own "
            "compacted copy, or per 1k rows, not against (d)'s times"
        )
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the whole report to ``path`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=_plain) + "\n")
