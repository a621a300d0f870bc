"""A TCP proxy between a store and its server that cuts connections on demand.

Not a test module: the default suite (``tests/test_connection_faults.py``) and the
fault suite (``tests/test_server_faults.py``) put it between a store and a server to
cut connections at chosen moments:

- :meth:`FaultProxy.cut_all`: every open connection, now (mid-transaction for those
  inside one);
- :meth:`FaultProxy.refuse`: new connections are accepted and closed at once (the
  server looks gone) until called again with False;
- :meth:`FaultProxy.arm`: the next client message holding a statement (a regular
  expression over the bytes: :data:`COMMIT`) is forwarded whole, half (``"half"``:
  cut mid-message) or not at all (``"before"``), then that connection is cut before
  any answer comes back. With ``COMMIT`` forwarded whole this is the "did it
  commit?" case.

Connections are plain TCP (PostgreSQL URLs get ``sslmode=disable``) so that the
markers can be seen. psycopg prepares a statement it has run five times and then
sends only its name: the proxy remembers, per connection, the text each name was
prepared with, so a marker is found in a prepared ``COMMIT`` too.
"""

from __future__ import annotations

import random
import re
import selectors
import socket
import threading
from contextlib import suppress
from typing import Literal

from sqlalchemy.engine import make_url

Where = Literal["before", "half", "after"]

_PG_MESSAGES = frozenset(bytes([c]) for c in b"PBDEHSCQXdcfF")
"""Type bytes of the PostgreSQL frontend messages a client sends after its startup."""

COMMIT = rb"(?<![A-Za-z_ ])COMMIT(?![A-Za-z_])"
"""A ``COMMIT`` statement on the wire (not ``READ COMMITTED``)."""


class FaultProxy:
    """Listens on a free local port and forwards each connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._prepared: dict[int, dict[bytes, bytes]] = {}
        """Per client socket: PostgreSQL statement name -> the query it was prepared with."""
        self._refusing = False
        self._armed: list[tuple[bytes, Where, float]] = []
        self.cuts = 0
        """Connections cut so far (by any means)."""
        self._rng = random.Random(0)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    def url(self, url: str) -> str:
        """``url`` pointed at the proxy instead of its server."""
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        if parsed.get_backend_name() == "postgresql":
            parsed = parsed.update_query_dict({"sslmode": "disable"})
        return parsed.render_as_string(False)

    def cut_all(self) -> int:
        """Close every open connection now; return how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._close(pair)
        return len(pairs)

    def refuse(self, refusing: bool = True) -> None:
        """Accept and close every new connection (True) or forward them again (False)."""
        with self._lock:
            self._refusing = refusing

    def arm(self, marker: bytes, where: Where, probability: float = 1.0) -> None:
        """Cut the connection that next sends ``marker`` (each such message is cut with
        ``probability``), after forwarding none, half or all of that message. Stays
        armed for one cut; :meth:`disarm` drops what is left."""
        with self._lock:
            self._armed.append((marker, where, probability))

    def arm_always(self, marker: bytes, where: Where, probability: float) -> None:
        """Like :meth:`arm`, but for every message with ``marker`` until :meth:`disarm`."""
        with self._lock:
            self._armed.append((marker, where, -probability))

    def disarm(self) -> None:
        with self._lock:
            self._armed = []

    @property
    def armed(self) -> bool:
        with self._lock:
            return bool(self._armed)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.cut_all()
        self._selector.close()
        self._listener.close()

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._selector.select(timeout=0.05)
            except (OSError, ValueError):
                continue
            for key, _ in events:
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        with self._lock:
            refusing = self._refusing
        if refusing:
            client.close()
            return
        try:
            server = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (client, server)
        with self._lock:
            self._pairs.append(pair)
        self._selector.register(client, selectors.EVENT_READ, (pair, True))
        self._selector.register(server, selectors.EVENT_READ, (pair, False))

    def _forward(
        self, source: socket.socket, data: tuple[tuple[socket.socket, socket.socket], bool]
    ) -> None:
        pair, from_client = data
        target = pair[1] if from_client else pair[0]
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(pair)
            return
        cut = self._cut_point(self._visible(pair[0], chunk)) if from_client else None
        try:
            if cut is None:
                target.sendall(chunk)
                return
            if cut == "half":
                target.sendall(chunk[: max(1, len(chunk) // 2)])
            elif cut == "after":
                target.sendall(chunk)
        except OSError:
            pass
        self._drop(pair)

    def _visible(self, client: socket.socket, chunk: bytes) -> bytes:
        """``chunk`` and, after it, the text of each prepared PostgreSQL statement it
        executes by name (Parse records a name's text, Bind names the statement)."""
        names = self._prepared.setdefault(client.fileno(), {})
        extra = []
        at = 0
        while at + 5 <= len(chunk) and chunk[at : at + 1] in _PG_MESSAGES:
            length = int.from_bytes(chunk[at + 1 : at + 5], "big")
            body = chunk[at + 5 : at + 1 + length]
            if chunk[at : at + 1] == b"P":
                name, _, rest = body.partition(b"\x00")
                query = rest.partition(b"\x00")[0]
                if name:
                    names[name] = query
            elif chunk[at : at + 1] == b"B":
                statement = body.partition(b"\x00")[2].partition(b"\x00")[0]
                if statement in names:
                    extra.append(b"\x00" + names[statement])
            at += 1 + length
        return chunk + b"".join(extra)

    def _cut_point(self, chunk: bytes) -> Where | None:
        with self._lock:
            for n, (marker, where, probability) in enumerate(self._armed):
                if re.search(marker, chunk) is None:
                    continue
                if self._rng.random() >= abs(probability):
                    return None
                if probability > 0:
                    del self._armed[n]
                return where
        return None

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair not in self._pairs:
                return
            self._pairs.remove(pair)
        self._close(pair)

    def _close(self, pair: tuple[socket.socket, socket.socket]) -> None:
        self.cuts += 1
        for sock in pair:
            with suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def proxy_for(url: str) -> FaultProxy:
    """A :class:`FaultProxy` to the server of ``url``."""
    parsed = make_url(url)
    default = 5432 if parsed.get_backend_name() == "postgresql" else 3306
    return FaultProxy(parsed.host or "127.0.0.1", parsed.port or default)
