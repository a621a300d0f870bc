"""After ``fork()``, a pooled connection belongs to the process that opened it.

A child that reuses its parent's pooled connection shares one socket with it: replies
reach the wrong process, children hang, acknowledged writes vanish. SQLAlchemy's
documented recipe ("Using Connection Pools with Multiprocessing or os.fork()") stamps
each connection with the pid that opened it and, on checkout in any other process,
drops it without closing it (closing would end the parent's session too) so the pool
opens a fresh one. Every engine the store uses gets it, caller-built ones included.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import (
    ConnectionPoolEntry,
    PoolProxiedConnection,
    SingletonThreadPool,
    StaticPool,
)

_PID = "uniqc_taskstore_pid"


def guard_after_fork(engine: Engine) -> None:
    """Give ``engine`` the after-fork recipe, once however often it is called.

    Pools that hold an in-memory SQLite database are left alone: the child's copy of
    their one connection is the child's only copy of the data."""
    if isinstance(engine.pool, (StaticPool, SingletonThreadPool)):
        return
    if not event.contains(engine, "connect", _stamp_pid):
        event.listen(engine, "connect", _stamp_pid)
        event.listen(engine, "checkout", _refuse_other_process)


def _stamp_pid(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    record.info[_PID] = os.getpid()


def _refuse_other_process(
    _dbapi_conn: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    pid = os.getpid()
    # Only connections already checked out when the guard was attached (the store
    # empties the pool right after) lack a stamp: count them as this process's.
    owner = record.info.setdefault(_PID, pid)
    if owner != pid:
        record.dbapi_connection = proxy.dbapi_connection = None  # type: ignore[misc]
        raise DisconnectionError(
            f"pooled connection was opened in process {owner}, not {pid}; opening a new one"
        )
