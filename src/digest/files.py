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
from pathlib import Path

SUFFIX = ".digest-tmp"
# The leading dot, the dot and eight hex digits, and the suffix: what a temporary name adds.
OVERHEAD = 1 + 1 + 8 + len(SUFFIX)
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ATTEMPTS = 100


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
