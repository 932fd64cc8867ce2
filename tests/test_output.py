"""Writing the generated files: only what changed, and all or nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digest.errors import BuildError
from digest.publish import output

OLD = 1_000_000_000  # an mtime far in the past, to see whether a file was touched


def age(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD, OLD))


def test_unchanged_files_are_not_rewritten(tmp_path: Path) -> None:
    """A rebuild with no change keeps every mtime, so servers keep answering 304 Not Modified."""
    files = {"a.xml": b"one", "archive/b.html": b"two"}
    first = output.write(tmp_path, files)
    assert first == output.WriteReport(written=("a.xml", "archive/b.html"), unchanged=())
    age(tmp_path)
    second = output.write(tmp_path, files)
    assert second == output.WriteReport(written=(), unchanged=("a.xml", "archive/b.html"))
    assert (tmp_path / "a.xml").stat().st_mtime == OLD
    assert (tmp_path / "archive/b.html").stat().st_mtime == OLD


def test_only_changed_files_are_rewritten(tmp_path: Path) -> None:
    """Editing one feed's content rewrites that file alone."""
    output.write(tmp_path, {"a.xml": b"one", "b.xml": b"two"})
    age(tmp_path)
    report = output.write(tmp_path, {"a.xml": b"one", "b.xml": b"TWO"})
    assert report.written == ("b.xml",)
    assert (tmp_path / "a.xml").stat().st_mtime == OLD
    assert (tmp_path / "b.xml").read_bytes() == b"TWO"


def test_failed_write_changes_nothing(tmp_path: Path) -> None:
    """If one file cannot be written, every existing file stays as it was and no debris is left."""
    output.write(tmp_path, {"a.xml": b"old a"})
    (tmp_path / "archive").write_text("a file where a directory is needed")
    age(tmp_path)
    with pytest.raises(BuildError, match=r"nothing in .* was changed"):
        output.write(tmp_path, {"a.xml": b"new a", "archive/2025-11.html": b"page"})
    assert (tmp_path / "a.xml").read_bytes() == b"old a"
    assert (tmp_path / "a.xml").stat().st_mtime == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xml", "archive"]


def test_stale_lists_missing_and_different_files(tmp_path: Path) -> None:
    """`build --check` names exactly the files that are out of date."""
    output.write(tmp_path, {"a.xml": b"one", "b.xml": b"two"})
    assert output.stale(tmp_path, {"a.xml": b"one", "b.xml": b"2", "c.xml": b"3"}) == [
        "b.xml",
        "c.xml",
    ]
    assert output.stale(tmp_path / "missing", {"a.xml": b"one"}) == ["a.xml"]


def test_symlinks_planted_at_temporary_names_are_not_followed(tmp_path: Path) -> None:
    """Someone who can write to the output folder cannot make a build overwrite another file."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    (out / "archive").mkdir(parents=True)
    files = {"a.xml": b"new a", "archive/2025-11.html": b"page"}
    planted = []
    for name in files:
        target = out / name
        # Every name the old code used (its pid, or none), and the target itself.
        for guess in (f".{target.name}.{os.getpid()}.tmp", f".{target.name}.tmp", target.name):
            link = target.with_name(guess)
            link.symlink_to(victim)
            planted.append(link)

    report = output.write(out, files)

    assert victim.read_bytes() == b"precious"
    assert report.written == ("a.xml", "archive/2025-11.html")
    for name, data in files.items():
        assert not (out / name).is_symlink()
        assert (out / name).read_bytes() == data
    assert all(link.is_symlink() for link in planted if link.name.endswith(".tmp"))


def test_a_name_too_long_for_the_file_system_is_a_clear_error(tmp_path: Path) -> None:
    """A 250-character file name fails with its name and no traceback, and leaves no debris."""
    output.write(tmp_path, {"a.xml": b"old a"})
    age(tmp_path)
    long_name = "b" * 246 + ".xml"
    with pytest.raises(BuildError) as raised:
        output.write(tmp_path, {"a.xml": b"new a", long_name: b"b", "c.xml": b"c"})
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / long_name}: cannot write it (File name too long: ")
    assert message.endswith(f"; nothing in {tmp_path} was changed")
    assert (tmp_path / "a.xml").read_bytes() == b"old a"
    assert (tmp_path / "a.xml").stat().st_mtime == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xml"]


def test_leftover_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """A write clears what an interrupted build left, never anyone's file, link or folder."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    (out / "archive").mkdir(parents=True)
    leftovers = [
        ".a.xml.0123abcd.digest-tmp",  # this version's pattern
        ".a.xml.4242.tmp",  # the pattern of the versions before
        "archive/.2025-10.html.ffff0000.digest-tmp",  # one this build does not write again
    ]
    for name in leftovers:
        (out / name).write_bytes(b"half")
    kept = {
        ".notes.tmp": b"someone's",  # not our pattern
        ".b.xml.4242.tmp": b"not ours",  # old pattern, but no file of ours is called b.xml
        "archive/readme.txt": b"theirs",
    }
    for name, data in kept.items():
        (out / name).write_bytes(data)
    (out / ".a.xml.99.tmp").symlink_to(victim)  # a link is never removed or followed
    (out / ".a.xml.00000000.digest-tmp").mkdir()  # nor a folder

    files = {"a.xml": b"a", "archive/2025-11.html": b"page"}
    assert output.strays(out, files) == sorted(leftovers)

    report = output.write(out, files)

    assert report.removed == tuple(sorted(leftovers))
    assert output.strays(out, files) == []
    assert victim.read_bytes() == b"precious"
    assert (out / ".a.xml.99.tmp").is_symlink()
    assert (out / ".a.xml.00000000.digest-tmp").is_dir()
    for name, data in kept.items():
        assert (out / name).read_bytes() == data


def test_output_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """An output path that is a file stops the build with that path named."""
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(BuildError) as raised:
        output.write(out, {"a.xml": b"a"})
    assert str(raised.value) == (
        f"{out}: cannot write into it (File exists); nothing in {out} was changed"
    )
    assert out.read_text() == "a file"


def test_a_folder_where_a_file_goes_changes_nothing(tmp_path: Path) -> None:
    """A folder in one file's way fails the build before any other file is replaced."""
    output.write(tmp_path, {"a.xml": b"old a"})
    (tmp_path / "b.xml").mkdir()
    age(tmp_path)
    with pytest.raises(BuildError) as raised:
        output.write(tmp_path, {"a.xml": b"new a", "b.xml": b"b"})
    assert str(raised.value) == (
        f"{tmp_path / 'b.xml'}: cannot write it (Is a directory); nothing in {tmp_path} was changed"
    )
    assert (tmp_path / "a.xml").read_bytes() == b"old a"
    assert (tmp_path / "a.xml").stat().st_mtime == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xml", "b.xml"]


def test_staged_files_are_flushed_together_and_kept_whole(tmp_path: Path) -> None:
    """A build's files, flushed side by side before the renames, must still be all there, whole."""
    files = {f"f{i}.xml": bytes([i]) * (1000 + i) for i in range(40)}
    report = output.write(tmp_path, files)
    assert sorted(report.written) == sorted(files)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_a_file_that_cannot_be_flushed_is_named(tmp_path: Path) -> None:
    """Should the disk refuse a staged file, the error says which file, and nothing is renamed."""
    from digest import files as staging

    staged = [staging.stage(tmp_path / f"f{i}", b"x") for i in range(3)]
    staged[1].unlink()  # gone before its flush: what a failing flush looks like to the caller
    with pytest.raises(OSError, match=str(staged[1].name)) as caught:
        staging.flush(staged)
    assert caught.value.filename == str(staged[1])
    staging.flush(staged[2:])  # one alone is flushed without threads
