"""Private PostgreSQL and MariaDB servers for the fault suite, in a temporary directory
on free ports: restarted, killed and filled up by the tests, never the shared servers.

Not a test module. PostgreSQL 15 runs from ``initdb`` + ``pg_ctl`` as the ``postgres``
user (they refuse to run as root), MariaDB from ``mariadb-install-db`` +
``mariadbd --no-defaults``. Both trust local logins (the store connects as
``postgres`` / ``root`` without a password), and skip flushing to disk (a test
kills the server process, never the machine: every commit still reaches the
operating system before it is acknowledged) and with a small ``max_connections``, so that the
"server full" fault is quick to cause.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADB_INSTALL = "mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
MAX_CONNECTIONS = 60
START_TIMEOUT_SECONDS = 60.0


def available() -> str | None:
    """Why private servers cannot run here, or None if they can."""
    if not (PG_BIN / "pg_ctl").exists():
        return f"no PostgreSQL 15 binaries in {PG_BIN}"
    if shutil.which(MARIADB_INSTALL) is None or not Path(MARIADBD).exists():
        return "no mariadb-install-db / mariadbd"
    if os.geteuid() != 0:
        return "private servers are started as root (PostgreSQL then runs as postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


class PrivateServer:
    """One private server: ``url`` reaches it; ``restart`` / ``kill`` break it."""

    kind: str
    url: str

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` (clean shutdown) or ``kill`` (SIGKILL of the server)."""
        raise NotImplementedError

    def pid(self) -> int:
        raise NotImplementedError

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        self.stop("fast")


class PrivatePostgres(PrivateServer):
    kind = "postgresql"

    def __init__(self, root: Path) -> None:
        self.root = root / "pg"
        self.root.mkdir(parents=True)
        user = pwd.getpwnam("postgres")
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=START_TIMEOUT_SECONDS,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections={MAX_CONNECTIONS} -c superuser_reserved_connections=0 "
            "-c shared_buffers=16MB"
        )
        for _ in range(50):  # after a kill, the old server's children may linger briefly
            try:
                self._as_postgres(
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "start",
                )
                break
            except subprocess.CalledProcessError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'log'}")
        _wait_for_port(self.port)

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        if mode == "kill":
            pid = self.pid()
            os.kill(pid, signal.SIGKILL)
            # Its backends notice the postmaster is gone and exit; wait for them.
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while _children_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            return
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


def _children_alive(parent: int) -> bool:
    """Whether any process whose parent is ``parent`` is still alive."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            return True
    return False


class PrivateMariaDB(PrivateServer):
    kind = "mysql"

    def __init__(self, root: Path, extra_args: Sequence[str] = ()) -> None:
        self.extra_args = list(extra_args)
        self.root = root / "mariadb"
        self.root.mkdir(parents=True)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/test"
        subprocess.run(
            [
                MARIADB_INSTALL,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.start()
        subprocess.run(
            ["mariadb", "-uroot", "-h127.0.0.1", f"-P{self.port}", "-e", "CREATE DATABASE test"],
            check=True,
            timeout=30,
        )

    def start(self) -> None:
        log = (self.root / "err.log").open("ab")
        self._process = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.root / 'sock'}",
                f"--pid-file={self.root / 'pid'}",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                # Written to the OS at each commit (a killed server loses nothing),
                # flushed to disk once a second (no machine crashes here).
                "--innodb-flush-log-at-trx-commit=2",
                f"--max-connections={MAX_CONNECTIONS}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        _wait_for_port(self.port)

    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self, mode: str = "fast") -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
        process.wait(timeout=START_TIMEOUT_SECONDS)
        self._process = None
