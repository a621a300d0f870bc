"""Round trips counted on the wire: a TCP proxy between the store and its server.

A round trip is one wait of the client for the server: the client sends, then reads
the answer before it sends again. The proxy forwards bytes both ways and counts, per
connection, each time the client starts sending after the server last spoke (or for
the first time). That counts every statement, ``BEGIN``, ``COMMIT``, the pool's
``ROLLBACK`` and ping alike, whatever code sent them, and a batch the driver sends
without waiting (a psycopg pipeline up to its ``Sync``, several statements in one
MariaDB ``COM_QUERY``) as the one round trip it is: PostgreSQL answers a pipeline
only at its ``Sync``, MariaDB a query only once it has all of it. One exception, for
PostgreSQL: a ``Flush`` right after a ``Sync`` is not counted (see ``_forward``).
Connections through the proxy are not encrypted (``sslmode=disable``), so that those
two messages can be seen.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy.engine import make_url


class RoundTripProxy:
    """Listens on a local port and forwards each connection to ``host:port``."""

    def __init__(self, host: str, port: int, *, postgresql: bool = False) -> None:
        self._upstream = (host, port)
        self._postgresql = postgresql
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="round-trip-proxy", daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        """Round trips so far, over every connection."""
        with self._lock:
            return self._count

    def url(self, url: str) -> str:
        """``url`` pointed at the proxy instead of its server."""
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        if self._postgresql:
            parsed = parsed.update_query_dict({"sslmode": "disable"})
        return parsed.render_as_string(False)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(self._upstream)
        client.setblocking(True)
        state: dict[str, Any] = {"client_turn": False, "after_sync": False}
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._selector.register(client, selectors.EVENT_READ, (server, True, state))
        self._selector.register(server, selectors.EVENT_READ, (client, False, state))

    def _forward(self, source: socket.socket, data: tuple[socket.socket, bool, Any]) -> None:
        target, from_client, state = data
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            for sock in (source, target):
                with suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
            return
        if from_client:
            # PostgreSQL: a Flush right after a Sync asks for nothing more (the Sync has
            # the server send everything), so the client still waits for the same answer.
            # psycopg's pipeline sends one on leaving the pipeline, sometimes after the
            # answer has begun to arrive: not a round trip of its own.
            redundant = self._postgresql and state["after_sync"] and _only_flushes(chunk)
            if not state["client_turn"] and not redundant:
                with self._lock:
                    self._count += 1
            state["after_sync"] = chunk.endswith(_SYNC) or redundant
        state["client_turn"] = from_client
        target.sendall(chunk)


_SYNC = b"S\x00\x00\x00\x04"
_FLUSH = b"H\x00\x00\x00\x04"


def _only_flushes(chunk: bytes) -> bool:
    return len(chunk) % len(_FLUSH) == 0 and chunk == _FLUSH * (len(chunk) // len(_FLUSH))


@contextmanager
def round_trip_proxy(url: str) -> Iterator[RoundTripProxy]:
    """A proxy to the server of ``url`` for the duration of the block."""
    parsed = make_url(url)
    postgresql = parsed.get_backend_name() == "postgresql"
    port = parsed.port or (5432 if postgresql else 3306)
    proxy = RoundTripProxy(parsed.host or "127.0.0.1", port, postgresql=postgresql)
    try:
        yield proxy
    finally:
        proxy.close()
