"""Premailer, imported in a second process while a send does its other work.

Importing premailer (with cssutils, lxml and requests) takes a send about 0.2 seconds of one
core, all of it before the first page can be inlined, while the rest of the send (loading the
catalogue, reading the list, importing it into the store) has no use for it. On a machine with
more than one core, `Helper.start` begins a Python process that imports it and waits. The send
fills in its templates for every selection it expects (`delivery.prerender`) and hands each page
to the helper before it imports the list; by the time it freezes the month the helper has
styled them, as the same code would have here (`inliner.for_digest`), byte for byte.

Nothing depends on the helper: a page it cannot inline (it died, it was never started, premailer
raised on that page) is inlined in this process, which then imports premailer itself, so an
error is raised here as it always was.

The protocol on the helper's stdin and stdout: each page as a 4-byte big-endian length and its
UTF-8 bytes; each answer, in the same order, as a byte (1: inlined, 0: not) and the same
framing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO

_LENGTH = struct.Struct(">I")


class Helper:
    """A helper process that inlines pages, or none (every answer is then None).

    Pages may be handed over ahead of need (`submit`): a thread writes them to the helper and
    another reads its answers as they come, so neither pipe ever fills with the other side
    waiting, and the helper works through them while this process does something else.
    """

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self._process = process
        self._changed = threading.Condition()  # an answer came, or the helper ended
        self._answers: dict[int, str | None] = {}  # by the page's number, until asked for
        self._asked = 0  # pages numbered so far
        self._ended = process is None  # no answer comes any more
        self._pages: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: the end
        self._threads = [
            threading.Thread(target=work, name=f"digest-helper-{name}", daemon=True)
            for name, work in (("pages", self._feed), ("answers", self._listen))
        ]
        if process is not None:
            for thread in self._threads:
                thread.start()

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
        """The helper's process id, while it answers."""
        with self._changed:
            return None if self._ended or self._process is None else self._process.pid

    def submit(self, page: str) -> Callable[[], str | None]:
        """Hand `page` to the helper; the call returned gives it inlined, or None (inline it
        here), waiting for the helper if it has not answered yet."""
        with self._changed:
            if self._ended:
                return _nothing
            number, self._asked = self._asked, self._asked + 1
            self._pages.put(page.encode("utf-8"))  # in number order: one lock for both

        def answer() -> str | None:
            with self._changed:
                self._changed.wait_for(lambda: number in self._answers or self._ended)
                return self._answers.pop(number, None)

        return answer

    def inline(self, page: str) -> str | None:
        """Return `page` inlined by the helper, or None: inline it here."""
        return self.submit(page)()

    def close(self) -> None:
        """End the helper: its stdin closes, it exits, and any answer not come is None."""
        process = self._process
        if process is None:
            return
        self._pages.put(None)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        self._end()

    def _feed(self) -> None:
        """Write each page to the helper, in order (the pages thread)."""
        assert self._process is not None  # noqa: S101 -- started with a process
        stdin = self._process.stdin
        assert stdin is not None  # noqa: S101 -- asked for
        try:
            while (data := self._pages.get()) is not None:
                _write(stdin, data)
        except (OSError, ValueError):  # it died: the answers thread hears the end
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _listen(self) -> None:
        """Read the helper's answers as they come (the answers thread)."""
        assert self._process is not None  # noqa: S101 -- started with a process
        stdout = self._process.stdout
        assert stdout is not None  # noqa: S101 -- asked for
        number = 0
        try:
            while (done := stdout.read(1)) and (answer := _read(stdout)) is not None:
                with self._changed:
                    self._answers[number] = answer.decode("utf-8") if done == b"\x01" else None
                    self._changed.notify_all()
                number += 1
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdout.close()
            self._end()

    def _end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def __enter__(self) -> Helper:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _nothing() -> None:
    return None


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
    # Every answer is written and flushed: the send need not wait for Python's own teardown
    # (about 60 ms with premailer, lxml and requests loaded) to go on.
    os._exit(0)
