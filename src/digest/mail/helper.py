"""Premailer, imported in a second process while a send does its other work.

Importing premailer (with cssutils, lxml and requests) takes a send about 0.2 seconds of one
core, all of it before the first page can be inlined, while the rest of the send (loading the
catalogue, reading the list, importing it into the store) has no use for it. On a machine with
more than one core, `Helper.start` begins a Python process that imports it and waits; the send's
`Renderer` hands it each page to inline, and gets back what the same code would have made in
this process (`inliner.for_digest`), byte for byte.

Nothing depends on the helper: a page it cannot inline (it died, it was never started, premailer
raised on that page) is inlined in this process, which then imports premailer itself, so an
error is raised here as it always was.

The protocol on the helper's stdin and stdout: each page as a 4-byte big-endian length and its
UTF-8 bytes; each answer as a byte (1: inlined, 0: not) and the same framing.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
from types import TracebackType
from typing import IO

_LENGTH = struct.Struct(">I")


class Helper:
    """A helper process that inlines pages, or none (`inline` then always says None)."""

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self._process = process
        self._lock = threading.Lock()  # one page at a time on the pipes

    @classmethod
    def start(cls, cores: int | None = None) -> Helper:
        """Start the helper when there is a core for it (`cores`, default the machine's); a
        Helper in any case."""
        if (cores or os.cpu_count() or 1) < 2 or not sys.executable:
            return cls(None)  # one core: it would only take turns with this process
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "digest.mail.helper"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            return cls(None)
        return cls(process)

    @property
    def pid(self) -> int | None:
        """The helper's process id, while it runs."""
        return None if self._process is None else self._process.pid

    def inline(self, page: str) -> str | None:
        """Return `page` inlined by the helper, or None: inline it here."""
        with self._lock:
            process = self._process
            if process is None:
                return None
            assert process.stdin is not None  # noqa: S101 -- both pipes were asked for
            assert process.stdout is not None  # noqa: S101
            try:
                _write(process.stdin, page.encode("utf-8"))
                done = process.stdout.read(1)
                answer = _read(process.stdout)
            except (OSError, ValueError):
                answer, done = None, b""
            if answer is None:  # gone: no page goes to it again
                self._stop(process)
                return None
            return answer.decode("utf-8") if done == b"\x01" else None

    def close(self) -> None:
        """End the helper: its stdin closes, and it exits."""
        with self._lock:
            if self._process is not None:
                self._stop(self._process)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        self._process = None
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a helper that died mid-answer
                    pipe.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Helper:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _write(out: IO[bytes], data: bytes) -> None:
    out.write(_LENGTH.pack(len(data)) + data)
    out.flush()


def _read(source: IO[bytes]) -> bytes | None:
    """Return one framed message, or None at the end of the stream."""
    head = source.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    data = source.read(length)
    return data if len(data) == length else None


def serve(source: IO[bytes], out: IO[bytes]) -> None:
    """Inline every page that comes on `source` until it ends: the helper's whole life."""
    from digest.mail.inliner import for_digest

    premailer = for_digest()
    while (page := _read(source)) is not None:
        try:
            inlined = premailer.transform(page.decode("utf-8"), pretty_print=False)
        except Exception:  # the caller inlines this page itself, and says why
            out.write(b"\x00")
            _write(out, b"")
            continue
        out.write(b"\x01")
        _write(out, str(inlined).encode("utf-8"))


if __name__ == "__main__":
    # The answers go out on a copy of stdout; anything a library prints goes where stderr goes
    # (nowhere: the send starts the helper with stderr closed), never into an answer.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Ctrl-C reaches the whole process group; a send that ended closes the pipes.
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, answers)
