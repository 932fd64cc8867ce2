"""`digest subscribers` end to end: the import's preview and its counts, the list, and sends that
honour what the store says."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import SmtpServer
from digest.cli import cli
from digest.send import store
from digest.send.ledger import Ledger
from digest.send.store import Store

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(".digest/state.sqlite3")
BUNDLED = [line.split(",")[0] for line in (ROOT / "subscribers.csv").read_text().splitlines()[1:]]
ADDED = "".join(
    f"add     {address} ({name})\n"
    for address, name in [
        ("chan.taiman@example.org", "Prof. Chan Tai-man"),
        ("lee.kawai@example.org", "Dr. Lee Ka-wai"),
        ("wong.siuming@example.org", "Prof. Wong Siu-ming"),
        ("cheung.mei@example.org", "Dr. Cheung Mei"),
        ("ng.chiho@example.org", "Prof. Ng Chi-ho"),
        ("lam.wingsze@example.org", "Dr. Lam Wing-sze"),
        ("ho.kinfai@example.org", "Prof. Ho Kin-fai"),
        ("yip.sukyee@example.org", "Yip, Suk-yee"),
        ("tsang.hiuyan@example.org", "Dr. Tsang Hiu-yan"),
        ("leung.kamwah@example.org", "Prof. Leung Kam-wah"),
        ("garcia.maria@example.org", "Dr. María García"),
        ("smith.john@example.org", "Prof. John Smith"),
    ]
)
NOTHING = "subscribers.csv: nothing to change (12 addresses already as the file says).\n"


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    """The bundled catalogue and list in tmp_path, no delivery settings inherited; the store on
    the engine of the run."""
    for name in ("DIGEST_SMTP_URL", "DIGEST_SMTP_PASSWORD", "DIGEST_STATE", "DIGEST_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    if database_url is not None:
        monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run() -> Callable[..., Result]:
    """Run `digest ARGS...` in the project and return click's result."""
    return lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)


def state(tmp_path: Path) -> Ledger:
    """Return the project's state database, on the engine of the run."""
    return Ledger(tmp_path / STATE, url=os.environ.get("DIGEST_DATABASE_URL"))


def rows(tmp_path: Path) -> dict[str, store.Subscription]:
    with state(tmp_path) as ledger:
        return Store(ledger).rows()


def test_import_dry_run_then_import_then_again(run: Callable[..., Result], tmp_path: Path) -> None:
    """The preview must match what the import then does, and a second import must change nothing."""
    dry = run("subscribers", "import", "subscribers.csv", "--dry-run")
    assert (dry.exit_code, dry.stderr) == (0, "")
    assert dry.stdout == ADDED + (
        "subscribers.csv: would import (nothing imported: a dry run): 12 added, 0 updated, "
        "0 ended (no longer in the directory).\n"
    )
    assert not (tmp_path / STATE).exists()
    if "DIGEST_DATABASE_URL" in os.environ:
        assert rows(tmp_path) == {}  # nothing written to PostgreSQL either

    done = run("subscribers", "import", "subscribers.csv")
    assert done.exit_code == 0
    assert done.stdout == ADDED + (
        "subscribers.csv: imported: 12 added, 0 updated, 0 ended (no longer in the directory).\n"
    )
    assert sorted(rows(tmp_path)) == sorted(BUNDLED)

    again = run("subscribers", "import", "subscribers.csv")
    assert (again.exit_code, again.stdout) == (0, NOTHING)


def test_removed_line_ends_only_that_membership(run: Callable[..., Result], tmp_path: Path) -> None:
    """Taking one line out of the directory must end that membership and leave everyone else."""
    run("subscribers", "import", "subscribers.csv")
    before = rows(tmp_path)
    listed = (tmp_path / "subscribers.csv").read_text(encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text(
        listed.replace("ng.chiho@example.org,Prof. Ng Chi-ho,\n", ""), encoding="utf-8"
    )

    result = run("subscribers", "import", "subscribers.csv")

    assert result.stdout == (
        "end     ng.chiho@example.org: no longer in the directory\n"
        "subscribers.csv: imported: 0 added, 0 updated, 1 ended (no longer in the directory).\n"
    )
    after = rows(tmp_path)
    assert {key for key in after if after[key] != before[key]} == {"ng.chiho@example.org"}
    assert after["ng.chiho@example.org"].in_directory is False
    listing = run("subscribers", "list", "--format", "csv").stdout.splitlines()
    assert "ng.chiho@example.org,Prof. Ng Chi-ho,active,,directory,no" in listing


def test_import_updates_names_and_unchosen_categories(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """The directory's corrections reach the store, but never categories a person chose."""
    run("subscribers", "import", "subscribers.csv")
    with state(tmp_path) as ledger:
        Store(ledger).change(
            lambda r: store.choose(r, "lee.kawai@example.org", "subscriber",
                                   categories=frozenset({"engagement"})),
            datetime.now(UTC),
        )  # fmt: skip
    listed = (tmp_path / "subscribers.csv").read_text(encoding="utf-8")
    listed = listed.replace("Prof. Chan Tai-man,", "Prof. Chan Tai-man,visit")
    listed = listed.replace("Dr. Lee Ka-wai,", "Dr. Lee Ka-wai,visit")
    (tmp_path / "subscribers.csv").write_text(listed, encoding="utf-8")

    result = run("subscribers", "import", "subscribers.csv")

    assert result.stdout == (
        "update  chan.taiman@example.org: categories: every category -> visit\n"
        "subscribers.csv: imported: 0 added, 1 updated, 0 ended (no longer in the directory).\n"
    )
    assert rows(tmp_path)["lee.kawai@example.org"].categories == {"engagement"}


def test_import_with_a_bad_row_changes_nothing(run: Callable[..., Result], tmp_path: Path) -> None:
    """A typo in the directory must stop the import by line, not end anyone's membership."""
    run("subscribers", "import", "subscribers.csv")
    (tmp_path / "bad.csv").write_text("email,name\nx@,X\n", encoding="utf-8")
    before = rows(tmp_path)

    result = run("subscribers", "import", "bad.csv")

    assert result.exit_code == 1
    assert result.stderr == (
        "bad.csv:2: email: 'x@' is not an email address: There must be something after the "
        "@-sign.\n"
    )
    assert rows(tmp_path) == before


def test_remove_then_import_keeps_the_address_off_the_list(run: Callable[..., Result]) -> None:
    """`remove` must stick: the next import reports the address and leaves it unsubscribed."""
    run("subscribers", "import", "subscribers.csv")

    removed = run("subscribers", "remove", "Lee.Kawai@example.org")
    again = run("subscribers", "remove", "lee.kawai@example.org")
    imported = run("subscribers", "import", "subscribers.csv")
    added = run("subscribers", "add", "lee.kawai@example.org")

    assert removed.stdout == "Unsubscribed lee.kawai@example.org; no import adds it again.\n"
    assert again.stdout == "lee.kawai@example.org is off the list already; nothing changed.\n"
    assert imported.stdout == (
        "keep    lee.kawai@example.org: unsubscribed, as they chose; the import leaves it so\n"
        "subscribers.csv: nothing to change (12 addresses already as the file says); 1 kept as "
        "they chose (unsubscribed, bounced or complained).\n"
    )
    assert added.exit_code == 1
    assert added.stderr.startswith("lee.kawai@example.org is unsubscribed since ")
    listing = run("subscribers", "list", "--status", "unsubscribed")
    assert listing.stdout == (
        "email                  name            status        categories  source     directory\n"
        "lee.kawai@example.org  Dr. Lee Ka-wai  unsubscribed  all         directory  yes\n"
        "1 row.\n"
    )


def test_add_list_and_export(run: Callable[..., Result], tmp_path: Path) -> None:
    """Staff can add a reader by hand and see and export exactly what the store holds."""
    added = run("subscribers", "add", "New@example.org", "--name", "New", "--categories",
                "visit; engagement")  # fmt: skip
    twice = run("subscribers", "add", "new@example.org")
    unknown = run("subscribers", "add", "other@example.org", "--categories", "nope")
    bad = run("subscribers", "add", "not-an-address")
    nobody = run("subscribers", "remove", "nobody@example.org")

    assert added.stdout == "Added New@example.org (New): active, engagement;visit.\n"
    assert twice.stdout == "new@example.org is on the list already; nothing changed.\n"
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "--categories: 'nope' not declared in the catalogue; declared: achievement, "
        "collaboration, engagement, engagement-and-visit, institutional-advancement, "
        "recognition, visit\n",
    )
    assert bad.exit_code == 1
    assert bad.stderr.startswith("'not-an-address' is not an email address: ")
    assert nobody.stderr == (
        "nobody@example.org is not in the subscriber store; `digest subscribers list` shows who "
        "is\n"
    )
    listing = run("subscribers", "list", "--format", "csv")
    assert listing.stdout == (
        "email,name,status,categories,source,directory\n"
        "New@example.org,New,active,engagement;visit,staff,no\n"
    )
    run("subscribers", "export", "-o", "out.csv")
    exported = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert exported[0] == (
        "email,name,status,categories,source,directory,paused_until,subscribed_at,"
        "subscribed_via,confirmed_at,confirmed_via,updated_at"
    )
    assert exported[1].startswith("New@example.org,New,active,engagement;visit,staff,no,,20")
    assert ",added by " in exported[1]
    assert run("subscribers", "export").stdout.splitlines() == exported
    with state(tmp_path) as ledger:
        history = Store(ledger).history("new@example.org")
    assert [(e.action, e.actor.startswith("staff:")) for e in history] == [("added", True)]


def test_empty_store_lists_nothing(run: Callable[..., Result], tmp_path: Path) -> None:
    """Looking at the list before anything was imported creates nothing and says so."""
    assert run("subscribers", "list").stdout == "No subscribers yet.\n"
    assert run("subscribers", "list", "--status", "pending").stdout == (
        "No subscribers with status pending.\n"
    )
    assert not (tmp_path / STATE).exists()


def test_send_goes_to_whom_the_store_says(
    run: Callable[..., Result], smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Who unsubscribed, left the directory or paused gets nothing; a chosen category is kept."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    run("subscribers", "import", "subscribers.csv")
    run("subscribers", "remove", "lee.kawai@example.org")
    run("subscribers", "add", "new@example.org", "--categories", "engagement")
    with state(tmp_path) as ledger:
        Store(ledger).change(
            lambda r: store.choose(r, "chan.taiman@example.org", "subscriber",
                                   categories=frozenset({"collaboration"})),
            datetime.now(UTC),
        )  # fmt: skip
    listed = (tmp_path / "subscribers.csv").read_text(encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text(
        listed.replace("ng.chiho@example.org,Prof. Ng Chi-ho,\n", ""), encoding="utf-8"
    )

    result = run("send", "--month", "2025-11", "--yes")

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "subscribers.csv: imported: 0 added, 0 updated, 1 ended (no longer in the directory); "
        "1 kept as they chose (unsubscribed, bounced or complained).\n"
    )
    got = smtp_server.recorder.by_recipient()
    expected = set(BUNDLED) - {"lee.kawai@example.org", "ng.chiho@example.org",
                                "smith.john@example.org"} | {"new@example.org"}  # fmt: skip
    assert set(got) == expected
    chan = got["chan.taiman@example.org"][0].message.get_body(("plain",))
    assert chan is not None
    text = str(chan.get_content())
    assert "GPTX" in text  # collaboration
    assert "Medical School" not in text  # institutional advancement: not chosen


def test_a_row_that_left_the_directory_does_not_read_as_receiving(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """Staff reading the table must not take a row that left the directory for a recipient."""
    run("subscribers", "import", "subscribers.csv")
    listed = (tmp_path / "subscribers.csv").read_text(encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text(
        listed.replace("ng.chiho@example.org,Prof. Ng Chi-ho,\n", ""), encoding="utf-8"
    )
    run("subscribers", "import", "subscribers.csv")
    table = run("subscribers", "list").stdout.splitlines()
    ng = next(line for line in table if line.startswith("ng.chiho@example.org"))
    lee = next(line for line in table if line.startswith("lee.kawai@example.org"))
    assert "active (left the directory: gets no digest)" in ng
    assert "left the directory" not in lee
