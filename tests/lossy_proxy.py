"""A TCP proxy in front of Redis that loses, or holds back, the reply to a chosen command: a lost
connection or a slow Redis, on purpose and at a precise moment."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

WATCHED = (b"EVALSHA", b"BLMOVE")
"""Commands whose replies the proxy can lose."""
NIL_REPLIES = (b"*-1", b"$-1", b"_")
"""How a reply starts when a blocking pop timed out (RESP2 and RESP3): never lost."""


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.awaiting: bytes | None = None  # the watched command whose reply comes next
        self.silent = False  # a reply was swallowed: forward nothing more from Redis
        self.tail = b""  # the last bytes sent upstream, to find a command split across reads
        self.held: bytes | None = None  # replies held back ("hold"), forwarded on release


class LossyProxy:
    """A TCP proxy in front of Redis that can lose the reply to the next EVALSHA or to the
    next BLMOVE that returns a message: it forwards the command, then, when Redis's reply
    comes, either closes the client's connection or swallows the reply and leaves the
    connection open. It can also refuse clients."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._lock = threading.Lock()
        self._lose: tuple[bytes, str] | None = None  # (command, "close" or "swallow"), armed
        self._refuse_after_loss = False
        self._refusing = False
        self.lost_replies = 0
        self._release = False
        self._links: list[_Link] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lossy-proxy", daemon=True)
        self._thread.start()

    def lose_next_reply(
        self, command: bytes, how: str = "close", then_refuse: bool = False
    ) -> None:
        """Lose Redis's next reply to ``command`` (one of ``WATCHED``) that is not a nil."""
        assert command in WATCHED
        with self._lock:
            self._lose = (command, how)
            self._refuse_after_loss = then_refuse

    def lose_next_evalsha_reply(self, how: str = "close", then_refuse: bool = False) -> None:
        self.lose_next_reply(b"EVALSHA", how, then_refuse)

    def hold_next_evalsha_reply(self) -> None:
        """Hold Redis's next reply to an EVALSHA back (and what follows it on that connection)
        until ``release()``: a Redis that answers late."""
        self.lose_next_reply(b"EVALSHA", "hold")

    def release(self) -> None:
        """Forward the replies held back."""
        with self._lock:
            self._release = True

    def refuse(self, refusing: bool) -> None:
        """Close every connection and refuse new ones (or accept them again)."""
        with self._lock:
            self._refusing = refusing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                with self._lock:
                    refusing = self._refusing
                    release, self._release = self._release, False
                if release:
                    for link in self._links:
                        held, link.held = link.held, None
                        if held is not None:
                            with contextlib.suppress(OSError):  # the client may be gone
                                link.client.sendall(held)
                if refusing:
                    for link in list(self._links):
                        self._drop(selector, link)
                for key, _ in selector.select(timeout=0.02):
                    if key.fileobj is self._listener:
                        self._accept(selector, refusing)
                    else:
                        self._pump(selector, key.data, key.fileobj is key.data.client)
        finally:
            for link in list(self._links):
                self._drop(selector, link)
            selector.close()
            self._listener.close()

    def _accept(self, selector: selectors.BaseSelector, refusing: bool) -> None:
        client, _ = self._listener.accept()
        if refusing:
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
        link = _Link(client, upstream)
        self._links.append(link)
        selector.register(client, selectors.EVENT_READ, link)
        selector.register(upstream, selectors.EVENT_READ, link)

    def _pump(self, selector: selectors.BaseSelector, link: _Link, from_client: bool) -> None:
        source = link.client if from_client else link.upstream
        try:
            data = source.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._drop(selector, link)
            return
        if from_client:
            for command in WATCHED:
                if command in link.tail + data:
                    link.awaiting = command
            link.tail = data[-16:]
            link.upstream.sendall(data)
            return
        if link.silent:
            return
        if link.held is not None:
            link.held += data
            return
        command, link.awaiting = link.awaiting, None
        with self._lock:
            how = None
            armed = self._lose is not None and self._lose[0] == command
            if self._lose is not None and armed and not data.startswith(NIL_REPLIES):
                how, self._lose = self._lose[1], None
                self.lost_replies += 1
                self._refusing = self._refusing or self._refuse_after_loss
        if how is None:
            link.client.sendall(data)
        elif how == "close":
            self._drop(selector, link)
        elif how == "hold":
            link.held = data
        else:  # "swallow": keep the connection open, forward nothing more on it
            link.silent = True

    def _drop(self, selector: selectors.BaseSelector, link: _Link) -> None:
        if link in self._links:
            self._links.remove(link)
        for sock in (link.client, link.upstream):
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(sock)
            sock.close()
