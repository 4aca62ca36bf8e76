"""A real PostgreSQL server for the tests: `initdb` into a temporary folder, `postgres` on
127.0.0.1 on a free port (its unix socket in the same folder), stopped when the run ends.

The binaries come from PATH or Debian's /usr/lib/postgresql/<version>/bin (the `postgresql`
package; run-tests installs it when it can). PostgreSQL refuses to run as root, so under root
the server runs as the `postgres` user the package creates. Each test gets an empty database
of its own (`new_database`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def find_binaries() -> tuple[str, str] | None:
    """(initdb, postgres), or None if PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb is None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
        initdb = found[-1] if found else None
    if initdb is None:
        return None
    beside = Path(os.path.realpath(initdb)).parent / "postgres"
    server = str(beside) if beside.exists() else shutil.which("postgres")
    return (initdb, server) if server else None


def _server_user() -> str | None:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no `postgres` user to run PostgreSQL as") from None
    return "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, initdb: str, postgres: str):
        self.initdb, self.postgres = initdb, postgres
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="deskhand-pg-"))
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, deadline_s: float = 60.0) -> PostgresServer:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        data, log = self.root / "data", self.root / "server.log"
        subprocess.run([self.initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--no-locale", "--no-sync"], user=self.user, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(log, "wb") as out:
            # Durability settings off: a test cluster that dies is thrown away anyway.
            self.proc = subprocess.Popen(
                [self.postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.root),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                user=self.user, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text(errors='replace')}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {log.read_text(errors='replace')}") from None
                time.sleep(0.05)  # polling for the server to accept connections

    def new_database(self) -> str:
        """An empty database of its own; its URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients, then stops
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server, stopped and removed afterwards. Raises LookupError if PostgreSQL is
    not installed."""
    binaries = find_binaries()
    if binaries is None:
        raise LookupError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    server = PostgresServer(*binaries)
    try:
        yield server.start()
    finally:
        server.stop()
