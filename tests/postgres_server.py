"""A throwaway PostgreSQL server for the tests: Debian's binaries, loopback only, a private data dir.

initdb and postgres refuse to run as root (CI runs as root), so under root the server runs as an
unprivileged user (``nobody`` unless ``CXR_AGENT_TEST_PG_USER`` names another) in a temporary
directory that user owns; pytest's own tmp dirs are 0700 root, so they cannot hold it. The unix
socket goes to that directory too (never /var/run/postgresql), TCP listens on 127.0.0.1 at a free
port, and fsync is off: a test server keeps nothing worth a disk flush.

``make postgres`` (a prerequisite of ``make test``) installs Debian's ``postgresql`` when no
``initdb`` is found, so the Postgres tests never skip on a fresh machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine; the message names the fix."""


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<ver>/bin holding initdb, or $CXR_AGENT_TEST_PG_BINDIR."""
    env = os.environ.get("CXR_AGENT_TEST_PG_BINDIR")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for c in candidates:
        if c and Path(c, "initdb").exists() and Path(c, "postgres").exists():
            return Path(c)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin: "
        "run `make postgres` (apt-get install postgresql) or set CXR_AGENT_TEST_PG_BINDIR"
    )


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.name.split(".")[0])
    except ValueError:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + postgres in a temp dir; ``url`` is a postgresql:// URL for database ``cxr``.

    ``stop()`` and ``start()`` again keep the data dir and the port: a restart, as an operator
    would do it, for the tests that check conversations and connection pools survive one.
    """

    def __init__(self, bindir: Path | None = None, user: str | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self.user = (user or os.environ.get("CXR_AGENT_TEST_PG_USER") or "nobody") if self._as_root else None
        self.root = Path(tempfile.mkdtemp(prefix="cxr-agent-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.sock.mkdir()
        if self.user:
            pw = pwd.getpwnam(self.user)
            self._ids = (pw.pw_uid, pw.pw_gid)
            for p in (self.root, self.sock):
                os.chown(p, *self._ids)
        self._proc: subprocess.Popen | None = None
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/cxr"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        extra = {"user": self._ids[0], "group": self._ids[1], "extra_groups": []} if self.user else {}
        return subprocess.run(args, cwd=self.root, capture_output=True, text=True, timeout=120, **extra, **kw)

    def _initdb(self) -> None:
        out = self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--no-sync", "--no-instructions"])
        if out.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({out.returncode}): {out.stderr.strip()[-800:]}")

    def start(self, timeout_s: float = 30.0) -> PostgresServer:
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.sock), "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=60", "-c", "shared_buffers=32MB"]
        extra = {"user": self._ids[0], "group": self._ids[1], "extra_groups": []} if self.user else {}
        log = open(self.log, "ab")  # noqa: SIM115 - the server writes to it until stop()
        self._proc = subprocess.Popen(args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, **extra)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresUnavailable(f"postgres exited {self._proc.returncode}: {self.log.read_text()[-800:]}")
            ready = self._run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"])
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise PostgresUnavailable(f"postgres did not accept connections in {timeout_s:.0f} s")
        if not getattr(self, "_created", False):
            created = self._run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                 "-U", "postgres", "cxr"])
            if created.returncode != 0:
                raise PostgresUnavailable(f"createdb failed: {created.stderr.strip()}")
            self._created = True
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are terminated, as in a real restart."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(2)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
