"""What is measured that no single CLI command does alone; run in a fresh process by bench/run.py.

- messages CATALOGUE MONTH: the personalised messages of MONTH for every subscriber, made by the
  code `digest send` runs (prepare: the issue rendered and inlined once per category selection;
  then per recipient a delivery.Composer writes the bytes SMTP sends, from the selection's
  stencil), with no SMTP; prints the seconds it took, from the loaded catalogue on.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from digest.months import Month
from digest.publish import catalogue
from digest.send import delivery, subscribers
from digest.send.ledger import Ledger


def messages(path: Path, month: Month) -> float:
    loaded = catalogue.load(path)
    assert loaded.newsletter is not None
    declared = [c.slug for c in loaded.publication.categories]
    listed = subscribers.load(path.parent / loaded.newsletter.subscribers, declared)
    now = datetime(2025, 12, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as state:
        ledger = Ledger(Path(state) / "state.sqlite3")
        started = time.perf_counter()
        plan = delivery.prepare(loaded, listed, month, ledger, now, write=False)
        assert plan is not None
        compose = delivery.Composer(plan)
        for row in plan.todo:
            made = compose(row, now)
            if not isinstance(made, bytes):
                made.as_bytes()
        elapsed = time.perf_counter() - started
        ledger.close()
    return elapsed


def main() -> None:
    name, *args = sys.argv[1:]
    if name == "messages":
        print(f"{messages(Path(args[0]), Month.parse(args[1])):.6f}")
    else:
        raise SystemExit(f"unknown subject {name}")


if __name__ == "__main__":
    main()
