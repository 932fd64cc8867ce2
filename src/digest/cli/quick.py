"""A `digest build` with nothing to do, answered before click or any command is imported.

A no-change build is the build run most often (CI, a save hook, a cron job), and nearly all of
its time was Python starting and the command line's imports (click, every command's module,
dataclasses). `build` takes exactly the invocations it can answer, `digest [--debug] build
[-c/--catalogue PATH] [-o/--output DIR]`, reads the settings with `variables.read` and asks the
build cache with `buildcache.start`, the same calls the build service makes, and when there is
nothing to do and no leftover temporary file to remove, prints the service's summary line
(`wording.built`) and returns 0. Anything else returns None having printed nothing, and the
click command line runs as it always did and reports what it finds: another command or option,
shell completion, a path click's option types would refuse, a setting that does not check out,
a missing or stale manifest, any error, a summary that is not plain ASCII.
"""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it the same
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# The build options answered here, by their spellings; `build`'s others (--check, --help) are not.
_OPTIONS = {"-c": "catalogue", "--catalogue": "catalogue", "-o": "output", "--output": "output"}
# Set by a shell asking click to complete a command line (click's `_{PROG}_COMPLETE`).
_COMPLETION = "_DIGEST_COMPLETE"


def build(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """Print a no-change build's summary and return its exit status, or None to let click run."""
    options = _options(argv)
    # No stdout at all (`digest build >&-`): click's echo knows what to do then.
    if options is None or _COMPLETION in environ or sys.stdout is None:
        return None
    try:
        line = _unchanged(options, environ)
    except KeyboardInterrupt:  # Ctrl-C while it looks: as click says it, not a traceback
        sys.stderr.write("\nAborted!\n")
        return 1
    except Exception:  # whatever it was, the command line meets it again and reports it
        return None
    if line is None:
        return None
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Whatever read the output went away: exit 1 saying nothing, as click does. Python's note
        # on SIGPIPE: stdout onto /dev/null, or the interpreter's last flush complains.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return 0


def _options(argv: Sequence[str]) -> dict[str, str] | None:
    """Return the options of `[--debug] build [OPTIONS]`, each given once, or None."""
    args = list(argv)
    if args[:1] == ["--debug"]:
        del args[0]
    if args[:1] != ["build"]:
        return None
    found: dict[str, str] = {}
    rest = iter(args[1:])
    for arg in rest:
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif arg in _OPTIONS:
            name, value = arg, next(rest, "")
        elif arg[:2] in ("-c", "-o") and len(arg) > 2:  # -cPATH, as click reads it
            name, value = arg[:2], arg[2:]
        else:
            return None
        what = _OPTIONS.get(name)
        # A value click would read otherwise or refuse (empty, an option's name) is left to it.
        if what is None or what in found or not value or value.startswith(("-", "=")):
            return None
        found[what] = value
    return found


def _unchanged(options: dict[str, str], environ: Mapping[str, str]) -> str | None:
    """Return the summary of a build of `options` with nothing to do, or None if it has work."""
    from digest import files as staging
    from digest.app import variables, wording
    from digest.cli import _now
    from digest.publish import buildcache

    catalogue = Path(options.get("catalogue", "items.yaml"))
    values = variables.read(catalogue, environ)
    given = options.get("output")
    output_dir = Path(given) if given else variables.default(catalogue, "feeds")
    # What click's path options check before the command runs: these fail there with exit 2.
    if not os.access(catalogue, os.R_OK) or not os.path.isdir(output_dir):
        return None
    if not os.access(output_dir, os.R_OK):
        return None
    # No manifest, no shortcut: a first build hashes nothing here (90 MB at 100k items).
    if not buildcache.location(output_dir, variables.home(catalogue)).is_file():
        return None
    # Mapped, not read: hashing 9 MB (10k items) from the page cache saves their copy.
    with (
        open(catalogue, "rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as raw,
    ):
        start = buildcache.start(
            catalogue, raw, output_dir, variables.home(catalogue), values["public_url"]
        )
    manifest = start.manifest
    if manifest is None or not start.unchanged(output_dir, _now()):
        return None
    if staging.strays(output_dir, manifest.files):  # the build service removes them
        return None
    total = len(manifest.files)
    line = wording.built(f"{output_dir}/", total, 0, total, manifest.published)
    return line if line.isascii() else None
