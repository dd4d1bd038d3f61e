"""The writer process limits glibc's malloc arenas (its memory no longer grows with the table
for want of it), unless the operator chose a number."""

from __future__ import annotations

import ctypes
import sys

import pytest

from lancequeue.writer.allocator import limit_malloc_arenas

glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not glibc, reason="glibc only")
def test_the_writer_limits_glibc_s_malloc_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True


def test_an_operator_s_malloc_arena_max_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False
