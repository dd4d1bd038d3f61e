"""Benchmarks, the demo and load generation: ``lancequeue bench``, ``lancequeue demo`` and
``python -m lancequeue.bench.takeover``. Nothing in the product imports this package.

Everything here runs in the benchmark's own process or in child processes it starts: a private
``redis-server``, the writer through its CLI, producer processes
(``python -m lancequeue.bench.producer_load``) and one process per baseline
(``python -m lancequeue.bench.baseline_child``), so each system's memory is its own.
"""
