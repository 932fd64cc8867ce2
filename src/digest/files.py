"""Write a file under a temporary name beside its target, then rename it into place.

The temporary name is `.NAME.XXXXXXXX.digest-tmp`, with eight random hex digits, and the file is
created exclusively (O_CREAT | O_EXCL | O_NOFOLLOW): a file or link someone planted at that name
makes the creation fail and another name is tried, so nothing is ever written through a link.
`tempfile.mkstemp` does the same but always creates the file 0600, which would publish feeds no
web server can read; here the mode is 0666 less the umask, as `open` gives.

The temporary name is always longer than the target's, so a name too long for the file system
fails while its file is staged, before anything is renamed, keeping a write all or nothing.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

SUFFIX = ".digest-tmp"
# The leading dot, the dot and eight hex digits, and the suffix: what a temporary name adds.
OVERHEAD = 1 + 1 + 8 + len(SUFFIX)
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(SUFFIX), re.DOTALL)
# How digest named its temporary files before: `.NAME.PID.tmp`. Counted as its own only beside a
# file of that NAME, so that nobody else's `.notes.1.tmp` is taken for one.
_OLD_TEMPORARY = re.compile(r"\.(.+)\.[0-9]+\.tmp", re.DOTALL)
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ATTEMPTS = 100


def is_temporary(name: str) -> bool:
    """Return whether `name` (a bare file name) is one this module gives temporary files."""
    return _TEMPORARY.fullmatch(name) is not None


def strays(directory: Path, names: Collection[str]) -> list[str]:
    """Return the temporary files an interrupted write left beside `names` in `directory`.

    Only regular files are listed (never a link or a folder), only in the folders that hold
    `names`, and only under a name this module gives its temporary files (or gave them before).
    Whether the write that made one is still running is for the caller to know (see output).
    """
    by_folder: dict[str, set[str]] = {".": set()}
    for name in names:
        path = PurePosixPath(name)
        by_folder.setdefault(str(path.parent), set()).add(path.name)
    found = []
    for folder, own in by_folder.items():
        try:
            entries = list(os.scandir(directory / folder))
        except OSError:
            continue  # no such folder: nothing left in it
        for entry in entries:
            old = _OLD_TEMPORARY.fullmatch(entry.name)
            ours = is_temporary(entry.name) or (old is not None and old[1] in own)
            if ours and entry.is_file(follow_symlinks=False):
                found.append(str(PurePosixPath(folder) / entry.name))
    return sorted(found)


def stage(target: Path, data: bytes, *, durable: bool = False) -> Path:
    """Write `data` to a new temporary file beside `target` and return its path.

    With `durable`, the data is flushed to the disk before this returns. On failure nothing is
    left behind and the OSError is raised.
    """
    for _ in range(_ATTEMPTS):
        temporary = target.with_name(f".{target.name}.{os.urandom(4).hex()}{SUFFIX}")
        try:
            descriptor = os.open(temporary, _FLAGS, 0o666)
        except FileExistsError:
            continue  # taken, maybe by a planted link: never opened, try another name
        try:
            with open(descriptor, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except BaseException:
            discard(temporary)
            raise
        return temporary
    raise FileExistsError(errno.EEXIST, f"no free temporary name in {_ATTEMPTS} tries", str(target))


def flush(paths: Sequence[Path]) -> None:
    """Flush each of the files at `paths` (staged, not yet renamed) to the disk.

    The same guarantee as staging each with `durable`, for many files at a time: the flushes run
    side by side in threads (fsync lets go of the GIL), so the file system commits them together
    instead of once a file (a cold build's 148 files: about 0.12 s one by one, 0.03 s side by
    side, on the benchmark's machine). Raises the first OSError, naming the file it failed on.
    """
    if len(paths) <= 1:
        for path in paths:
            _flush(path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(_FLUSHERS, len(paths))) as pool:
        for _ in pool.map(_flush, paths):
            pass


_FLUSHERS = 16


def _flush(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def replace(target: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `target` at once: readers see the old file or the new one, never half."""
    temporary = stage(target, data, durable=durable)
    try:
        os.replace(temporary, target)
    except BaseException:
        discard(temporary)
        raise


def discard(temporary: Path) -> bool:
    """Remove a temporary file, whatever happens; return whether it is gone."""
    try:
        temporary.unlink(missing_ok=True)
    except OSError:
        return False
    return True
