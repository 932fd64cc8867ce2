"""A PostgreSQL server that restarts or drops the connection: digest connects again, loses
nothing and doubles nothing; a database that stays away is reported by its URL, password hidden."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import Recorder, SmtpServer, finish, free_port, smtp_serving, wait_for
from digest.errors import DatabaseLostError, DeliveryError, LockLostError
from digest.send import database, standby, store
from digest.send.database import PostgreSQLDatabase
from digest.send.ledger import Decision, Ledger, SendLock, Status
from digest.send.standby import SchedulerLock
from pgserver import PASSWORD, PostgreSQL, running

ROOT = Path(__file__).resolve().parent.parent
NOV = "2025-11"
SEND_LOCKS = 0x64696773  # the ledger's key for the months' send locks


@pytest.fixture(scope="module")
def restartable() -> Iterator[PostgreSQL]:
    """A cluster of this module's own, which its tests stop, start and restart."""
    with running(free_port()) as server:
        yield server


@dataclass
class Gated(Recorder):
    """A recording SMTP server that holds the reply to message number `at` until `go` is set."""

    at: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.at and len(self.messages) == self.at - 1:
            self.reached.set()
            await asyncio.get_running_loop().run_in_executor(None, self.go.wait, 60)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def gated() -> Iterator[SmtpServer]:
    recorder = Gated()
    with smtp_serving(recorder) as server:
        try:
            yield server
        finally:
            recorder.go.set()  # a reply still held back lets the server stop


def test_a_send_goes_on_through_two_restarts_of_postgresql(
    restartable: PostgreSQL,
    gated: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`digest send` of 300 while PostgreSQL restarts twice: each reader one copy, all recorded."""
    url = restartable.database()
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    readers = [f"reader{n:03}@example.org" for n in range(300)]
    lines = ["email,name", *(f"{address},Reader {n}" for n, address in enumerate(readers))]
    (tmp_path / "subscribers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    monkeypatch.setenv("DIGEST_SMTP_URL", gated.url)
    recorder = gated.recorder
    assert isinstance(recorder, Gated)
    recorder.at = 100
    proc = spawn("send", "--month", NOV, "--yes")
    # Once while the sender waits on the mail server (its connection idle), ...
    wait_for(recorder.reached.is_set, proc, "the 100th message")
    restartable.restart()
    recorder.go.set()
    # ... and once while it records as fast as the server answers.
    wait_for(lambda: len(recorder.messages) >= 200, proc, "200 messages")
    restartable.restart()
    status, out, err = finish(proc)

    assert status == 0, out + err
    assert out.endswith(
        f"November 2025: sent 300, already sent 0, deferred 0, failed 0 (via {gated.url}).\n"
    ), out
    assert err.count("lost the connection to the state database") == 2, err
    assert f"{url}: connected again after " in err
    by_recipient = recorder.by_recipient()
    assert sorted(by_recipient) == readers
    assert all(len(got) == 1 for got in by_recipient.values())
    with Ledger(tmp_path / "unused", url=url) as ledger:
        rows = ledger.deliveries(NOV)
        assert sorted(row.address for row in rows) == readers
        assert {row.status for row in rows} == {Status.SENT}
        assert [(run.sent, run.finished_at is not None) for run in ledger.runs(NOV)] == [
            (300, True)
        ]
        assert ledger.sending() == {}  # the lock was taken again, and let go at the end


def test_a_send_lock_is_taken_again_after_a_restart(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """A sender that reconnects still holds its month: another host is refused as before."""
    url = restartable.database()
    with (
        Ledger(tmp_path / "a" / "state.sqlite3", url=url) as here,
        SendLock(here.path, NOV, here) as lock,
        Ledger(tmp_path / "b" / "state.sqlite3", url=url) as there,
    ):
        lock.acquire("digest send")
        restartable.restart()
        assert here.deliveries(NOV) == []  # connects again, and takes the lock again
        with pytest.raises(DeliveryError, match="another send of 2025-11 is running"):
            SendLock(there.path, NOV, there).acquire("digest send")


def test_a_lock_taken_by_another_session_meanwhile_stops_the_sender(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """If another sender took the month while the connection was down, this one stops, at once
    (it waits only for its own old session to go, never for another's)."""
    url = restartable.database()
    with Ledger(tmp_path / "state.sqlite3", url=url) as here:
        lock = SendLock(here.path, NOV, here)
        lock.acquire("digest send")
        restartable.restart()
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s, 202511)", (SEND_LOCKS,))
            started = time.monotonic()
            with pytest.raises(LockLostError) as raised:
                here.deliveries(NOV)
            assert time.monotonic() - started < database.RECONNECT_FOR / 2
        assert str(raised.value) == (
            f"{url}: while the connection to the state database was lost, another process took "
            "the lock of sending 2025-11; this one stops there, and the other goes on"
        )


def test_a_database_that_stays_away_is_reported_without_its_password(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """Reconnecting is bounded: then an error names the database, never its password."""
    url = restartable.url(restartable.database().rsplit("/", 1)[1], user="secret")
    quoted = url.replace("secret@", "secret:s3cret%3Ap%40ss@")
    ledger = Ledger(tmp_path / "state.sqlite3", url=quoted, reconnect_for=1.0)
    try:
        restartable.stop()
        with pytest.raises(DeliveryError) as raised:
            ledger.deliveries(NOV)
    finally:
        restartable.start()
        ledger.close()
    message = str(raised.value)
    assert message.startswith(
        f"{url}: lost the connection to the state database (terminating connection due to "
        "administrator command) and could not connect again within 1 second ("
    ), message
    assert message.endswith(
        "); what was recorded before stays recorded: check that the server runs and can be "
        "reached, then run this again"
    )
    assert PASSWORD not in message
    assert "s3cret" not in message


def test_a_transaction_cut_off_is_rolled_back_and_run_again(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """A connection lost inside a write: nothing half-written, and the write is made once."""
    url = restartable.database()
    with Ledger(tmp_path / "state.sqlite3", url=url) as ledger:
        with pytest.raises(DatabaseLostError) as raised, ledger.transaction() as db:  # noqa: PT012
            db.execute("INSERT INTO holds (month, held, until) VALUES ('2025-10', 1, 'x')")
            restartable.restart()
            db.execute("INSERT INTO holds (month, held, until) VALUES ('2025-11', 1, 'x')")
        assert raised.value.written is False
        assert ledger.holds() == {}  # nothing of it, and the connection works again
        ledger.start_run(NOV, "smtp://relay", "digest send")
        assert len(ledger.runs(NOV)) == 1


class CutAfterCommit:
    """A TCP proxy to PostgreSQL that, when armed, passes the next COMMIT to the server and then
    cuts both connections before the server's answer reaches the client: the ambiguous commit."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            committing = threading.Event()
            threading.Thread(
                target=self._up, args=(client, server, committing), daemon=True
            ).start()
            threading.Thread(
                target=self._down, args=(server, client, committing), daemon=True
            ).start()

    def _up(
        self, client: socket.socket, server: socket.socket, committing: threading.Event
    ) -> None:
        while data := _receive(client):
            if self.armed.is_set() and b"COMMIT" in data:
                self.armed.clear()
                committing.set()
            server.sendall(data)
        server.close()

    def _down(
        self, server: socket.socket, client: socket.socket, committing: threading.Event
    ) -> None:
        while data := _receive(server):
            if committing.is_set():  # the server has committed: its answer is lost
                self.cut.set()
                for end in (client, server):
                    with contextlib.suppress(OSError):  # the other direction may close it first
                        end.shutdown(socket.SHUT_RDWR)
                    end.close()
                return
            client.sendall(data)
        client.close()

    def close(self) -> None:
        self.listener.close()


def _receive(end: socket.socket) -> bytes:
    try:
        return end.recv(65536)
    except OSError:
        return b""


def test_a_commit_whose_answer_was_lost_is_looked_up_not_repeated(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """The commit went through but its answer did not: digest asks the server, runs nothing
    twice, and says the write was made."""
    proxy = CutAfterCommit(restartable.port)
    url = f"postgresql://digest@127.0.0.1:{proxy.port}/{restartable.database().rsplit('/', 1)[1]}"
    try:
        with Ledger(tmp_path / "state.sqlite3", url=url) as ledger:
            proxy.armed.set()
            ledger.record_decision("2025-12-01T09:00:00+08:00", NOV, Decision.SENT)
            assert proxy.cut.is_set()  # the answer to that COMMIT never arrived
            assert [decided.month for decided in [ledger.last_decision()] if decided] == [NOV]
            rows = ledger.query("SELECT COUNT(*) FROM decisions")
            assert rows == [(1,)]  # made once, not twice
    finally:
        proxy.close()


def test_a_commit_the_server_never_got_is_reported_as_not_written(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """A COMMIT sent into a session the server had ended: looked up, found not made, said so."""
    url = restartable.database()
    with Ledger(tmp_path / "state.sqlite3", url=url) as ledger:
        db = ledger.database
        assert isinstance(db, PostgreSQLDatabase)
        with psycopg.connect(url, autocommit=True) as admin:
            backend = db.connection.info.backend_pid
            db.begin()
            db.execute("INSERT INTO holds (month, held, until) VALUES ('2025-11', 1, 'x')")
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            wait = time.monotonic() + 15
            while admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)
            ).fetchall():
                assert time.monotonic() < wait, "the server did not end the session"
                time.sleep(0.01)  # polling the server's list of sessions: nothing to await
            with pytest.raises(DatabaseLostError):
                db.commit()
        assert ledger.holds() == {}


def test_keepalives_are_on_both_ends_unless_the_url_says_otherwise(
    restartable: PostgreSQL,
) -> None:
    """A host that vanishes is noticed within about half a minute, by the server and by digest."""
    url = restartable.database()
    db = database.connect(Path("unused"), url)
    other = database.connect(Path("unused"), f"{url}?keepalives_idle=42")
    try:
        assert isinstance(db, PostgreSQLDatabase)
        assert isinstance(other, PostgreSQLDatabase)
        info = db.connection.info.get_parameters()
        assert (info["keepalives"], info["keepalives_idle"], info["tcp_user_timeout"]) == (
            "1",
            "10",
            "30000",
        )
        assert other.connection.info.get_parameters()["keepalives_idle"] == "42"
        shown = db.execute(
            "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout')"
        ).fetchone()
        assert shown == ("10", "30000")  # seconds, milliseconds
    finally:
        db.close()
        other.close()


def test_the_active_scheduler_keeps_its_role_through_a_restart(restartable: PostgreSQL) -> None:
    """A restart of the database does not hand the schedule to a standby: the lock is retaken."""
    url = restartable.database()
    lock = SchedulerLock(url)
    try:
        assert lock.acquire(threading.Event())
        restartable.restart()
        assert lock.check()
        with psycopg.connect(url, autocommit=True) as other:
            taken = other.execute("SELECT pg_try_advisory_lock(%s, %s)", standby.LOCK).fetchone()
        assert taken == (False,)
    finally:
        lock.release()


def test_a_store_change_cut_off_is_decided_again_and_written_once(
    restartable: PostgreSQL, tmp_path: Path
) -> None:
    """A subscriber change whose connection went mid-write is decided afresh and made once."""
    url = restartable.database()
    now = datetime(2025, 12, 1, tzinfo=UTC)
    with Ledger(tmp_path / "state.sqlite3", url=url) as ledger:
        db = ledger.database
        assert isinstance(db, PostgreSQLDatabase)
        decided: list[int] = []

        def decide(rows: Mapping[str, store.Subscription]) -> list[store.Change]:
            decided.append(len(rows))
            if len(decided) == 1:  # the first time, the server ends the session under it
                with psycopg.connect(url, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(%s, 10000)", (db.connection.info.backend_pid,)
                    )
            return store.add(rows, "new@example.org", "New", None, "ada", now)

        changes = store.Store(ledger).change(decide, now)
        assert decided == [0, 0]  # decided twice, on what the database held each time
        assert [change.after.key for change in changes] == ["new@example.org"]
        assert list(store.Store(ledger).rows()) == ["new@example.org"]
        assert len(store.Store(ledger).history("new@example.org")) == 1
