"""The benchmark's PNG chart, drawn with matplotlib when it is installed.

With systems: rows/s per system (log scale) beside p99 ack latency per system. With a sweep:
rows/s and the writer's peak RSS against the record count. Either way a third panel: how much
slower each measured table's scan and search are than a compacted copy's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lancequeue.bench.report import BYTES_PER_MIB, LABELS, storage_tables
from lancequeue.bench.sampling import BENCH_EXTRA_HINT

_FIGURE_SIZE_IN = (18.0, 4.5)
_DPI = 100
_RATIO_LABEL = "as written / compacted copy"


def _ratios(storages: list[dict[str, Any]], name: str) -> list[float]:
    return [float("nan") if storage[name] is None else storage[name] for storage in storages]


def _storage_bars(axes: Any, storages: dict[str, dict[str, Any]]) -> None:
    """Scan and search ratios side by side, one pair of bars per measured table."""
    positions = list(range(len(storages)))
    width = 0.4
    for offset, name, color in ((-0.2, "scan", "tab:green"), (0.2, "search", "tab:purple")):
        ratios = _ratios(list(storages.values()), f"{name}_ratio")
        bars = axes.bar([p + offset for p in positions], ratios, width, label=name, color=color)
        axes.bar_label(bars, fmt="{:.2f}x", fontsize="small")
    axes.set_xticks(positions, list(storages), rotation=15, ha="right", fontsize="small")
    axes.set(yscale="log", ylabel=_RATIO_LABEL, title="reads vs a compacted copy")


def _storage_lines(axes: Any, sweep: list[dict[str, Any]]) -> None:
    """Scan and search ratios against the record count."""
    records = [result["records"] for result in sweep]
    storages = [result["storage"] for result in sweep]
    for name, color in (("scan", "tab:green"), ("search", "tab:purple")):
        axes.plot(records, _ratios(storages, f"{name}_ratio"), marker="o", label=name, color=color)
    axes.set(xscale="log", xlabel="records", ylabel=_RATIO_LABEL, title="reads vs a compacted copy")
    axes.set_ylim(bottom=0)


def write_chart(report: dict[str, Any], path: Path) -> str:
    """Draw the chart into ``path``; a one-line note of what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"chart skipped: matplotlib is not installed ({BENCH_EXTRA_HINT})"
    figure, (left, right, storage) = plt.subplots(1, 3, figsize=_FIGURE_SIZE_IN)
    if report["sweep"]:
        records = [result["records"] for result in report["sweep"]]
        left.plot(records, [result["rows_per_s"] for result in report["sweep"]], marker="o")
        left.set(xscale="log", xlabel="records", ylabel="rows/s", title="lancequeue rows/s")
        left.set_ylim(bottom=0)
        rss = [result["peak_rss_bytes"] / BYTES_PER_MIB for result in report["sweep"]]
        right.plot(records, rss, marker="o", color="tab:red")
        right.set(xscale="log", xlabel="records", ylabel="MiB", title="writer peak RSS")
        right.set_ylim(bottom=0)
        _storage_lines(storage, report["sweep"])
    else:
        systems = report["systems"]
        names = [LABELS[name] for name in systems]
        positions = list(range(len(names)))
        bars = left.bar(positions, [result["rows_per_s"] for result in systems.values()])
        left.bar_label(bars, fmt="{:,.0f}", fontsize="small")
        left.set(yscale="log", ylabel="rows/s (log scale)", title="throughput")
        p99 = [(result.get("latency") or {}).get("p99_ms") for result in systems.values()]
        latency_bars = right.bar(
            positions, [0.0 if value is None else value for value in p99], color="tab:red"
        )
        right.bar_label(
            latency_bars, labels=["n/a" if value is None else f"{value:,.1f}" for value in p99]
        )
        right.set(ylabel="ms", title="p99 ack latency")
        for axes in (left, right):
            axes.set_xticks(positions, names, rotation=15, ha="right", fontsize="small")
        _storage_bars(storage, storage_tables(report))
    storage.axhline(1.0, color="grey", linewidth=0.8)
    storage.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return f"chart written to {path}"
