"""Write generated files all or nothing, and only the ones whose bytes changed.

A write holds an exclusive lock (flock) on the output directory while it stages and renames, so
two builds of one directory never interleave, and a temporary file found there while holding the
lock can belong to no running build: it was left by one that was killed, and is removed. The
lock is the kernel's, released when its process ends however it ends; a pid written in the name
could not tell a dead build from a live one in another container or on another host sharing the
folder, nor from an unrelated process that reused the pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from digest import files as staging
from digest.errors import BuildError


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What a write did, file by file (names relative to the directory)."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...] = ()  # temporary files an interrupted build had left


def stale(directory: Path, files: Mapping[str, bytes]) -> list[str]:
    """Return the names of `files` that are missing from `directory` or differ from it."""
    return [name for name, data in sorted(files.items()) if _current(directory / name) != data]


def strays(directory: Path, names: Collection[str]) -> list[str]:
    """Return the temporary files interrupted writes left beside `names` in `directory`."""
    return staging.strays(directory, names)


@contextlib.contextmanager
def locked(directory: Path, *, shared: bool = False) -> Iterator[bool]:
    """Hold `directory`'s build lock: exclusive to write, shared to look (`build --check`).

    Raises BuildError at once if a write holds it. Yields whether the lock is held: not when
    the directory does not exist (for a look; a write creates it), nor on a file system that
    cannot lock a folder (some network ones), where writing goes on as it did before the lock.
    """
    import fcntl  # here: a build with nothing to do and nothing to tidy never needs it

    try:
        if not shared:
            directory.mkdir(parents=True, exist_ok=True)
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if not (shared and exc.errno in (errno.ENOENT, errno.ENOTDIR)):
            raise BuildError(
                f"{directory}: cannot write into it ({_reason(exc, directory)}); "
                f"nothing in {directory} was changed"
            ) from exc
        handle = None
    if handle is None:
        yield False  # nothing there to look at, so nothing to guard
        return
    try:
        held = True
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(
                f"{directory}/: another `digest build` or `render` is writing into this folder "
                "right now; wait for it to finish, then run this again"
            ) from None
        except OSError:
            # No lock to be had here (ENOLCK, or EBADF on NFS): no telling a running build's
            # temporary files from a dead one's, so the caller leaves them all alone.
            held = False
        yield held
    finally:
        os.close(handle)  # releases the lock


def tidy(directory: Path, names: Collection[str]) -> tuple[str, ...]:
    """Remove what interrupted writes left beside `names` in `directory`; return what went."""
    if not staging.strays(directory, names):
        return ()  # the usual case: no lock to take for nothing to do
    with locked(directory) as held:
        return _remove(directory, strays(directory, names)) if held else ()


def write(directory: Path, files: Mapping[str, bytes]) -> WriteReport:
    """Write `files` into `directory`, leaving every existing file as it was if anything fails.

    Every changed file is first written and flushed beside its target; only when all of them are on
    disk are they renamed into place. Files whose bytes are unchanged are not touched (their mtimes
    stay, so web servers keep answering 304 and rsync copies nothing). Temporary files that an
    interrupted write left are removed first.
    """
    with locked(directory) as held:
        removed = _remove(directory, staging.strays(directory, files)) if held else ()
        changed = stale(directory, files)
        unchanged = tuple(name for name in sorted(files) if name not in set(changed))
        staged: list[tuple[Path, Path]] = []
        target = directory
        try:
            for name in changed:
                target = directory / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if _is_folder(target):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
                staged.append((staging.stage(target, files[name]), target))
            # Every file on the disk before any is renamed into place, flushed side by side.
            staging.flush([temporary for temporary, _ in staged])
        except OSError as exc:
            for temporary, staged_target in staged:
                if exc.filename == str(temporary):
                    target, exc.filename = staged_target, None  # the file, not its staged copy
                    break
            left = [str(t) for t, _ in staged if not staging.discard(t)]
            if exc.errno == errno.ENAMETOOLONG:
                # Only a name made from the catalogue can be long: a category's slug.
                limit = _name_max(target.parent) - staging.OVERHEAD
                why = f"{exc.strerror}: a name may have at most {limit} bytes here; shorten the "
                why += "category slug"
            else:
                why = _reason(exc, target)
            raise BuildError(
                f"{target}: cannot write it ({why}); "
                f"nothing in {directory} was changed{_left_behind(left)}"
            ) from exc
        for done, (temporary, target) in enumerate(staged):
            try:
                os.replace(temporary, target)
            except OSError as exc:
                # Rare once every file is staged; what was renamed stays, the rest is dropped.
                left = [str(t) for t, _ in staged[done:] if not staging.discard(t)]
                raise BuildError(
                    f"{target}: cannot replace it ({_reason(exc, target)}); {done} of "
                    f"{len(staged)} changed files in {directory} were already replaced; run the "
                    f"build again when this is fixed{_left_behind(left)}"
                ) from exc
    return WriteReport(tuple(changed), unchanged, removed)


def _remove(directory: Path, names: list[str]) -> tuple[str, ...]:
    # Each removal on its own: one that fails is listed again by `build --check`.
    return tuple(name for name in names if staging.discard(directory / name))


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _reason(exc: OSError, target: Path) -> str:
    """Return why `exc` failed, naming the path it failed on when that is not `target`'s own."""
    reason = exc.strerror or str(exc)
    failed = Path(str(exc.filename)) if exc.filename else target
    if failed != target and failed.parent != target.parent:
        return f"{failed}: {reason}"
    return reason


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _left_behind(paths: list[str]) -> str:
    if not paths:
        return ""
    return (
        f"; these temporary files could not be removed: {', '.join(paths)} (the next build "
        "removes them)"
    )


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
