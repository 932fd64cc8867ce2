"""An SMTP server on 127.0.0.1 that accepts and discards every message (aiosmtpd).

bench/run.py uses Postfix's `smtp-sink` when it is installed (`apt-get install postfix`), and this
otherwise. `python bench/sink.py PORT` runs until killed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from aiosmtpd.controller import Controller


class _Discard:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def main() -> None:
    controller = Controller(_Discard(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
