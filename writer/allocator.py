"""The writer process's C allocator: fewer glibc malloc arenas.

glibc gives each thread that contends for the heap an arena of its own, up to eight per core,
and keeps what each arena freed for its own later use. Lance's writes and compactions run on
many threads, so a writer process kept growing with the table: in a benchmark here, its peak
RSS was 1.6 times as large at 1,000,000 rows as at 100,000, and 1.4 times with two arenas.
``lancequeue writer`` therefore limits glibc to two arenas, as ``MALLOC_ARENA_MAX=2`` would,
unless that variable is set (the operator's value wins). An embedding application that runs
``Writer`` in its own process decides this for itself.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

WRITER_ARENAS = 2
_M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the most arenas (``malloc.h``)."""


def limit_malloc_arenas(arenas: int = WRITER_ARENAS) -> bool:
    """Have glibc create no more than ``arenas`` malloc arenas from now on (the ones that exist
    stay). Returns whether it did: not where ``MALLOC_ARENA_MAX`` is set, nor off glibc."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: musl's mallopt does nothing
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_ARENA_MAX, arenas))
    logger.debug("malloc arenas limited to %d: %s", arenas, applied)
    return applied
