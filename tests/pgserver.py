"""A throwaway PostgreSQL cluster for the tests: `initdb`, then `pg_ctl` on a free loopback port.

Debian's binaries (package `postgresql`) live in /usr/lib/postgresql/<major>/bin; `pg_config
--bindir` names them too. PostgreSQL refuses to run as root, so as root the cluster's files belong
to `nobody` and every server command runs as that user; as another user, as that user. The server
listens on 127.0.0.1 only, with no Unix socket, and trusts loopback logins except for the role
`secret`, which needs its password (for the tests of a password in the URL).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import psycopg

PASSWORD = "s3cret:p@ss"  # noqa: S105 -- the role `secret`'s: a colon and an @ to quote in a URL


def bindir() -> Path:
    """Return the folder of initdb, pg_ctl and postgres."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    config = shutil.which("pg_config")
    if config:
        return Path(subprocess.run([config, "--bindir"], capture_output=True, text=True,
                                   check=True).stdout.strip())  # fmt: skip
    raise RuntimeError("PostgreSQL's server binaries are missing: apt-get install postgresql")


@dataclass
class PostgreSQL:
    """A running cluster: make fresh databases on it, each named once; stop and start it."""

    port: int
    _names: Iterator[int]
    _control: Callable[..., None] = lambda *args: None  # runs `pg_ctl -D DATA ARGS...`

    def restart(self) -> None:
        """Restart the server as an administrator would (`pg_ctl restart -m fast`): every
        session is ended, open transactions rolled back, then it accepts connections again."""
        self._control("-m", "fast", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        """Stop the server (fast: sessions ended); `start` brings it back."""
        self._control("-m", "fast", "-w", "-t", "60", "stop")

    def start(self) -> None:
        """Start the server again after `stop`."""
        self._control("-w", "-t", "60", "start")

    def url(self, database: str = "postgres", user: str = "digest") -> str:
        """Return the URL of `database` as `user` (trusted on loopback)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """Return an autocommit connection to the maintenance database as the superuser."""
        return psycopg.connect(self.url(), autocommit=True)

    def database(self) -> str:
        """Create a new, empty database; return its URL."""
        name = f"test_{next(self._names)}"
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_owner(uid: int, gid: int) -> dict[str, object]:
    if os.getuid() != 0:
        return {}
    return {"user": uid, "group": gid, "extra_groups": []}


@contextmanager
def running(port: int) -> Iterator[PostgreSQL]:
    """Make and start a cluster on `port`; stop it and remove its files at the end."""
    binaries = bindir()
    owner = pwd.getpwnam("nobody") if os.getuid() == 0 else pwd.getpwuid(os.getuid())
    home = Path(tempfile.mkdtemp(prefix="digest-pg-"))
    data = home / "data"
    data.mkdir(mode=0o700)
    for path in (home, data):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    run_as = _as_owner(owner.pw_uid, owner.pw_gid)
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "HOME": str(home)}
    subprocess.run(
        [binaries / "initdb", "-D", data, "-U", "digest", "--auth=trust", "-E", "UTF8",
         "--no-sync", "--locale=C.UTF-8"],
        check=True, capture_output=True, env=env, **run_as,
    )  # fmt: skip
    with (data / "pg_hba.conf").open("w") as hba:
        hba.write("host all secret 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n")
    log = home / "server.log"
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        [binaries / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"],
        check=True, capture_output=True, env=env, **run_as,
    )  # fmt: skip

    def control(*args: str) -> None:
        subprocess.run(
            [binaries / "pg_ctl", "-D", data, "-l", log, "-o", options, *args],
            check=True, capture_output=True, env=env, **run_as,
        )  # fmt: skip

    try:
        server = PostgreSQL(port, count(1), control)
        with server.admin() as db:
            db.execute(f"CREATE ROLE secret LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        yield server
    finally:
        subprocess.run(
            [binaries / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
            capture_output=True, env=env, **run_as,
        )  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
