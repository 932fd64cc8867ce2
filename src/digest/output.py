"""Write generated files all or nothing, and only the ones whose bytes changed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from digest import files as staging
from digest.errors import BuildError


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What a write did, file by file (names relative to the directory)."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]


def stale(directory: Path, files: Mapping[str, bytes]) -> list[str]:
    """Return the names of `files` that are missing from `directory` or differ from it."""
    return [name for name, data in sorted(files.items()) if _current(directory / name) != data]


def write(directory: Path, files: Mapping[str, bytes]) -> WriteReport:
    """Write `files` into `directory`, leaving every existing file as it was if anything fails.

    Every changed file is first written and flushed beside its target; only when all of them are on
    disk are they renamed into place. Files whose bytes are unchanged are not touched (their mtimes
    stay, so web servers keep answering 304 and rsync copies nothing).
    """
    changed = stale(directory, files)
    unchanged = tuple(name for name in sorted(files) if name not in set(changed))
    staged: list[tuple[Path, Path]] = []
    try:
        for name in changed:
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.append((staging.stage(target, files[name], durable=True), target))
        for temporary, target in staged:
            os.replace(temporary, target)
    except OSError as exc:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise BuildError(
            f"{exc.filename or directory}: cannot write ({exc.strerror or exc}); "
            f"nothing in {directory} was changed"
        ) from exc
    return WriteReport(tuple(changed), unchanged)


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
