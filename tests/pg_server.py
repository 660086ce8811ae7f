"""A throwaway PostgreSQL: scripts/postgres_local.sh on a free loopback port, in a temporary
directory of its own, restartable, stopped and removed by `close()`. The tests' session server, the
fault tests' own server (which they restart and stop) and scripts/fault_run.py all start one here.
Imports nothing of pytest, so the script can use it too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


def as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; tests (and CI) may run as root, so it runs as `postgres`."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Server:
    def __init__(self, prefix: str = "fcn-sweep-pg-"):
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.root.chmod(0o777)  # the server user writes its cluster here
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        script = REPO / "scripts" / "postgres_local.sh"
        self.start_cmd = as_server_user([str(script), str(self.root / "pg"), "--port", str(port)])
        try:
            self.url = self.start().strip()  # without the password: workers get it from PGPASSWORD
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.password = (self.root / "pg" / "password").read_text().strip()
        self.full = self.url.replace("@", f":{self.password}@", 1)

    def start(self) -> str:
        """Start the server (again, after a stop: pg_ctl start alone would forget its port); its URL."""
        return subprocess.run(self.start_cmd, check=True, capture_output=True, text=True, timeout=120).stdout

    def pg_ctl(self, *args: str) -> None:
        # With a log file: a server started without one keeps pg_ctl's output pipe open.
        pg = self.root / "pg"
        cmd = [str(PG_BINS[-1]), "-D", str(pg / "data"), "-l", str(pg / "server.log"), "-w", *args]
        subprocess.run(as_server_user(cmd), check=True, capture_output=True, timeout=120)

    def terminate_connections(self) -> int:
        """pg_terminate_backend of every client connection but this one."""
        admin = create_engine(self.full.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            q = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            n = conn.execute(text(q + "AND pid <> pg_backend_pid()")).scalar_one()
        admin.dispose()
        return n

    def close(self) -> None:
        stop = [str(PG_BINS[-1]), "-D", str(self.root / "pg" / "data"), "-m", "immediate", "stop"]
        subprocess.run(as_server_user(stop), capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
