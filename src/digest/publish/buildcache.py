"""Remember what a build wrote, so that unchanged inputs skip the work and an edit redoes little.

A manifest per output directory, under `.digest/builds/`, records the inputs of the last build
(the catalogue's bytes, hashed, and everything else output depends on: digest's own code and
templates, the office's templates, the libraries that render, the time zone database, Python),
when the build stops being current (the first scheduled item's date), and, for every file
written, its size and mtime and the key of the content it was rendered from. A build whose inputs
hash the same, before that date, with every file still as written, has nothing to do; otherwise
a file whose key is unchanged and that is still as written is not rendered again. The cache is
only ever a shortcut: a missing, unreadable or foreign manifest means a full build, and every
decision to skip compares hashes of the inputs themselves, never times alone.

A `digest build` with nothing to do (`digest.cli.quick`) makes its decision with this module and
`app/variables.py` alone, before click or anything else is imported; so this module imports no
`dataclasses` (with `inspect`, a quarter of that build's instructions) and no `typing` at run
time: its two records are plain classes with slots, never changed once made.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import zoneinfo
from datetime import datetime
from pathlib import Path

from digest import __version__
from digest import files as staging

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it the same

if TYPE_CHECKING:
    from collections.abc import Mapping
    from mmap import mmap

FORMAT = 1
# What renders the output besides digest itself: a new version of any may change the bytes.
LIBRARIES = (
    "cmarkgfm",
    "feedgen",
    "icalendar",
    "jinja2",
    "lxml",
    "markupsafe",
    "nh3",
    "tzdata",
    "yaml",
)
# The office's templates sit beside the catalogue; digest's own inside the package or, in a
# source checkout, at the top of the repository.
TEMPLATE_DIRECTORY = "newsletter_templates"


class Manifest:
    """What the last build of one output directory wrote, and from what."""

    __slots__ = ("files", "inputs", "keys", "published", "valid_until")

    def __init__(
        self,
        inputs: str,
        valid_until: str | None,
        published: int,
        files: dict[str, tuple[int, int]],
        keys: dict[str, str],
    ) -> None:
        self.inputs = inputs  # hash of the catalogue's bytes and of the environment
        self.valid_until = valid_until  # ISO time of the first scheduled item: the output changes
        self.published = published
        self.files = files  # name -> (size, mtime_ns) as written
        self.keys = keys  # name -> hash of what its content was rendered from

    def current(self, directory: Path) -> set[str]:
        """Return the names of the files that are still exactly as this build left them."""
        # os.path.join, not `directory / name`: the same file, without a Path for each of them.
        return {
            name
            for name, seen in self.files.items()
            if _stat(os.path.join(directory, name)) == seen
        }

    def fresh(self, directory: Path, inputs: str, now: datetime) -> bool:
        """Return whether a build with `inputs` at `now` would write exactly what is there."""
        if self.inputs != inputs:
            return False
        if self.valid_until is not None and now >= datetime.fromisoformat(self.valid_until):
            return False
        return len(self.current(directory)) == len(self.files)


class Start:
    """What a build of one output directory starts from: its inputs, the last build's manifest."""

    __slots__ = ("environment", "inputs", "location", "manifest", "readable")

    def __init__(
        self,
        environment: str,
        inputs: str,
        location: Path,
        manifest: Manifest | None,
        readable: bool,
    ) -> None:
        self.environment = environment  # the hash of everything but the catalogue and the clock
        self.inputs = inputs  # the hash of all the inputs
        self.location = location  # where the manifest is kept
        self.manifest = manifest  # the last build's, if there is one to trust
        self.readable = readable  # whether the catalogue could be read

    def unchanged(self, directory: Path, now: datetime) -> bool:
        """Return whether the build has nothing to do: the files are what it would write."""
        return (
            self.readable
            and self.manifest is not None
            and self.manifest.fresh(directory, self.inputs, now)
        )


def start(
    catalogue_path: Path,
    catalogue_bytes: bytes | mmap | None,
    directory: Path,
    home: Path,
    signup: str | None,
) -> Start:
    """Return what a build of `directory` starts from; `catalogue_bytes` None: it was unreadable.

    `signup` is the address of the feed page's sign-up form (DIGEST_PUBLIC_URL), an input too.
    The build service and a no-change build (`digest.cli.quick`) both decide with this.
    """
    environment_hash = environment(catalogue_path)
    path = location(directory, home)
    return Start(
        environment_hash,
        inputs(catalogue_bytes or b"", environment_hash, signup),
        path,
        read(path),
        catalogue_bytes is not None,
    )


def location(directory: Path, home: Path = Path()) -> Path:
    """Return where the manifest of output `directory` is kept: `.digest/builds/` in `home`."""
    name = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return home / ".digest" / "builds" / f"{name}.json"


def environment(catalogue_path: Path) -> str:
    """Return the hash of everything output depends on besides the catalogue and the clock."""
    digest = hashlib.sha256()
    digest.update(f"{FORMAT}\0{__version__}\0{sys.version}\0".encode())
    package = Path(__file__).resolve().parents[1]  # digest/, not publish/: all its code
    roots = [
        package,
        package.parents[1] / TEMPLATE_DIRECTORY,
        catalogue_path.resolve().parent / TEMPLATE_DIRECTORY,
    ]
    for root in roots:
        for path in _files(root):
            digest.update(f"{path}\0".encode())
            digest.update(hashlib.sha256(_contents(path)).digest())
    # The system's time zone database (dates are shown in the publication's zone): its version.
    for folder in zoneinfo.TZPATH:
        try:
            with open(Path(folder) / "tzdata.zi", "rb") as handle:
                digest.update(handle.readline())
        except OSError:
            continue
    for library in LIBRARIES:
        # Where it is installed and when its file was written: an upgrade changes both.
        spec = importlib.util.find_spec(library)
        origin = spec.origin if spec and spec.origin else ""
        digest.update(f"{library}\0{origin}\0{_stat(Path(origin)) if origin else ''}\0".encode())
    return digest.hexdigest()


def inputs(catalogue_bytes: bytes | mmap, environment: str, signup: str | None = None) -> str:
    """Return the hash of all a build's inputs but the clock.

    `signup`, the feed page's sign-up address, is hashed as if it followed the catalogue's bytes
    after a NUL (None adds nothing), without making that copy of them.
    """
    catalogue = hashlib.sha256(catalogue_bytes)
    if signup:
        catalogue.update(f"\0{signup}".encode())
    return key(environment, catalogue.digest())


def _files(root: Path) -> list[str]:
    """Return the paths of the files below `root`, in a fixed order, bytecode left out."""
    # Strings, not Paths: a no-change build hashes about a hundred, and pathlib took 3 ms for them.
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if s != "__pycache__")
        found += [
            os.path.join(folder, n) for n in sorted(names) if not n.endswith((".pyc", ".pyo"))
        ]
    return found


def _contents(path: str) -> bytes:
    """Return a file's bytes, read unbuffered (the buffer would only be copied out of)."""
    with open(path, "rb", buffering=0) as handle:
        return handle.readall()


def read(path: Path) -> Manifest | None:
    """Return the manifest at `path`, or None if there is none or it cannot be trusted."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        return Manifest(
            inputs=str(data["inputs"]),
            valid_until=data["valid_until"],
            published=int(data["published"]),
            files={str(k): (int(v[0]), int(v[1])) for k, v in data["files"].items()},
            keys={str(k): str(v) for k, v in data["keys"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def record(
    path: Path,
    directory: Path,
    inputs: str,
    valid_until: datetime | None,
    published: int,
    keys: Mapping[str, str],
) -> Manifest | None:
    """Write the manifest of a build that left `keys`' files in `directory`; return it.

    Returns None, leaving no manifest, if any file cannot be seen or the manifest cannot be
    written: the next build is then a full one, which is always right.
    """
    files = {}
    for name in sorted(keys):
        seen = _stat(directory / name)
        if seen is None:
            _forget(path)
            return None
        files[name] = seen
    manifest = Manifest(
        inputs, valid_until.isoformat() if valid_until else None, published, files, dict(keys)
    )
    document = {
        "format": FORMAT,
        "inputs": manifest.inputs,
        "valid_until": manifest.valid_until,
        "published": manifest.published,
        "files": manifest.files,
        "keys": manifest.keys,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(path, json.dumps(document, indent=0, sort_keys=True).encode("utf-8"))
    except OSError:
        _forget(path)
        return None
    return manifest


def forget(path: Path) -> None:
    """Remove the manifest at `path`: the next build is a full one."""
    _forget(path)


def _forget(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return  # one that cannot be removed is found stale by its hashes all the same


def _stat(path: Path | str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_size, status.st_mtime_ns)


def key(*parts: str | bytes) -> str:
    """Return the hash of `parts`, each kept apart from the next."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
