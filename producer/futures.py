"""The sync producer's futures: ``concurrent.futures.Future`` without a lock per record.

A standard future makes a ``threading.Condition`` (a lock, a deque, five bound methods) as it is
made. The producer makes one per record, and thousands are alive at once, so that is most of
the garbage collector's work in a plain ``enqueue`` loop. Most futures are settled before
anyone waits on them: this one makes its condition only when a thread first needs it (to wait,
``concurrent.futures.wait``), and is settled without one if none was made. A done-callback is
added under a module-wide lock, without one.
Everything else is ``Future``'s own code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED, RUNNING
from concurrent.futures._base import LOGGER as _LOGGER
from typing import Any

from lancequeue.producer.results import WriteResult

_MAKING = threading.Lock()
"""Held while a condition is made, and while a future without one is settled: a thread that
makes the condition either sees the future settled, or the settling thread sees the condition
and settles through it (waking the waiters)."""
_LISTS = frozenset({"_waiters", "_done_callbacks"})


class RecordFuture(Future[WriteResult]):
    """Running from the start (``cancel()`` returns False: a sent record is answered
    regardless)."""

    def __init__(self) -> None:  # no super().__init__(): it would make the condition
        self._state = RUNNING
        self._result = None
        self._exception: BaseException | None = None
        # ``_waiters`` and ``_done_callbacks`` are made when first used (``__getattr__``).

    def __getattr__(self, name: str) -> Any:
        if name in _LISTS:  # setdefault: two threads making one get the same list
            return self.__dict__.setdefault(name, [])
        if name != "_condition":
            raise AttributeError(name)
        with _MAKING:
            condition = self.__dict__.get("_condition")
            if condition is None:
                condition = self.__dict__["_condition"] = threading.Condition()
            return condition

    def done(self) -> bool:
        return self._state == FINISHED  # never cancelled

    def result(self, timeout: float | None = None) -> WriteResult:
        if self._state != FINISHED:
            return super().result(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != FINISHED:
            return super().exception(timeout)
        return self._exception

    def set_result(self, result: WriteResult) -> None:
        if not self._settle_alone(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._settle_alone(None, exception):
            super().set_exception(exception)

    def add_done_callback(self, fn: Callable[[Future[WriteResult]], object]) -> None:
        with _MAKING:
            alone = "_condition" not in self.__dict__
            if alone and self._state != FINISHED:
                self.__dict__.setdefault("_done_callbacks", []).append(fn)  # run when settled
                return
        if not alone:
            super().add_done_callback(fn)
            return
        try:  # settled: now, as ``Future`` does
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def _settle_alone(self, result: WriteResult | None, exception: BaseException | None) -> bool:
        """Settle a future nobody has made the condition of (so nobody waits on it); False if
        one was made: ``Future`` settles it then."""
        with _MAKING:
            if "_condition" in self.__dict__:
                return False
            settled_before = self._state == FINISHED
            if not settled_before:
                self._result = result
                self._exception = exception
                self._state = FINISHED
        if settled_before:  # raised outside the lock: repr() makes the condition
            raise InvalidStateError(f"{FINISHED}: {self!r}")
        if "_done_callbacks" in self.__dict__:  # added before, under the lock: no more come
            self._invoke_callbacks()
        return True
