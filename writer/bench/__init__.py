"""``lancequeue bench``: lancequeue end to end, next to the ways one process can write a table.

Everything here runs in the benchmark's own process or in child processes it starts: a private
``redis-server``, the writer through its CLI, producer processes
(``python -m lancequeue.producer.bench_load``) and one process per baseline
(``python -m lancequeue.writer.bench.baseline_child``), so each system's memory is its own.
"""
