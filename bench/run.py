"""Measure digest against its floors, in the same run, and say which targets are met.

Every measurement is one fresh process: its wall time from spawn to exit and its peak RSS (from
wait4). Baseline and subject alternate, each repeated, and the median is kept, so that a busy
machine slows both alike. Prints a table and writes bench/results.json.

    python bench/run.py                      # everything: 1k, 10k, 100k items; 1k, 10k recipients
    python bench/run.py --sizes 1000 --recipients 1000 --reps 3   # a quick look
    python bench/run.py --only check,build-cold
    python bench/run.py --sizes '' --recipients '' --only shared --big-reps 1   # several senders
    python bench/run.py --peers --sizes 1000,10000,100000    # beside Hugo and Pelican (peers.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
DIGEST = str(Path(sys.executable).parent / "digest")
FLOORS = str(HERE / "floors.py")
SUBJECTS = str(HERE / "subjects.py")
MAKE = str(HERE / "make_catalogue.py")
MONTH = "2025-10"  # a month of the synthetic catalogue, for the message and send benchmarks


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU-seconds by process kind


@dataclass
class Row:
    name: str
    size: str
    subject: list[Sample] = field(default_factory=list)
    baseline: list[Sample] = field(default_factory=list)
    baseline_name: str = ""
    target: str = ""  # e.g. "<= 2.0"; empty: for information
    compare: str = "time"  # time, or rss

    def median(self, samples: list[Sample], what: str) -> float:
        values = [s.seconds if what == "time" else s.rss_mb for s in samples]
        return statistics.median(values) if values else float("nan")

    @property
    def ratio(self) -> float:
        return self.median(self.subject, self.compare) / self.median(self.baseline, self.compare)

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        op, limit = self.target.split()
        ok = self.ratio <= float(limit) if op == "<=" else self.ratio >= float(limit)
        return "pass" if ok else "FAIL"


def run_child(
    argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timed: bool = False
) -> Sample:
    """Run argv in a fresh process; return wall seconds (or the seconds it prints) and peak RSS."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out_file,
            stderr=err_file,
            stdin=subprocess.DEVNULL,
        )
        # Reaped with wait4, for the child's own peak RSS (not the largest of all children's).
        _, status, usage = os.wait4(process.pid, 0)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({process.returncode}):\n{err.decode()}{out.decode()}"
        )
    if timed:
        elapsed = float(out.decode().split()[-1])
    return Sample(elapsed, usage.ru_maxrss / 1024, {"process": usage.ru_utime + usage.ru_stime})


def compile_digest() -> None:
    """Compile digest's modules to bytecode (`__pycache__`), as installing a wheel does.

    A source checkout gets its bytecode on the first run, unless PYTHONDONTWRITEBYTECODE is set:
    then every run would compile digest's own modules again (about 0.1 s of CPU), which no
    installed digest does. py_compile writes the files whatever that variable says.
    """
    import importlib.util

    spec = importlib.util.find_spec("digest")  # found, not imported: this process stays small
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        subprocess.run([PYTHON, "-m", "compileall", "-q", folder], check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def smtp_sink(install: bool) -> str | None:
    """Return Postfix's smtp-sink; with `install`, install Debian's postfix for it when missing.

    The sink must not be what the send benchmarks measure: smtp-sink (C) answers a message in a
    few tens of microseconds, aiosmtpd (Python) in about 0.9 ms, which both the `smtplib` loop and
    `digest send` would wait on. Of the package, only the `smtp-sink` program is run, on
    127.0.0.1, and stopped after the benchmark.
    """
    installed = Path("/usr/sbin/smtp-sink")
    found = shutil.which("smtp-sink") or (str(installed) if installed.exists() else None)
    if found or not install or not shutil.which("apt-get"):
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"] if shutil.which("sudo") else None
    if prefix is None:
        return None
    print(
        "  installing Debian's postfix for its smtp-sink (the send benchmarks' sink)",
        file=sys.stderr,
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
    ):
        if subprocess.run([*prefix, *argv], env=env, stdout=subprocess.DEVNULL).returncode:
            return None
    return str(installed) if installed.exists() else shutil.which("smtp-sink")


class Sink:
    """An SMTP sink on 127.0.0.1: Postfix's smtp-sink when there is one, aiosmtpd otherwise."""

    def __init__(self, binary: str | None) -> None:
        self.port = free_port()
        if binary:
            argv = [binary]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            self.name = "postfix smtp-sink"
            self.process = subprocess.Popen([*argv, f"127.0.0.1:{self.port}", "256"])
        else:
            self.name = "aiosmtpd"
            self.process = subprocess.Popen(
                [PYTHON, str(HERE / "sink.py"), str(self.port)], stdout=subprocess.PIPE
            )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the SMTP sink did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def make(
    work: Path, items: int, recipients: int = 10, edition: int = 0, dkim: str | None = None
) -> Path:
    """Write the synthetic catalogue of `items` items into `work`; return its path.

    Written by another process: were this one to read or write the catalogue, its peak RSS would
    be passed on to every process it starts after that, and the RSS measurements would be wrong.
    """
    work.mkdir(parents=True, exist_ok=True)
    path = work / "items.yaml"
    subprocess.run(
        [
            PYTHON,
            MAKE,
            str(items),
            "-o",
            str(path),
            "--subscribers",
            str(recipients),
            "--edition",
            str(edition),
            *(["--dkim", dkim] if dkim else []),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return path


def fresh(work: Path, *names: str) -> None:
    for name in names:
        shutil.rmtree(work / name, ignore_errors=True)


def label(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def alternate(
    row: Row,
    reps: int,
    baseline: Callable[[], Sample] | None,
    subject: Callable[[], Sample],
    progress: Callable[[str], None],
) -> Row:
    for rep in range(reps):
        if baseline is not None:
            row.baseline.append(baseline())
        row.subject.append(subject())
        progress(f"{row.name} {row.size} {rep + 1}/{reps}")
    return row


def bench_items(
    count: int, reps: int, only: set[str] | None, progress: Callable[[str], None]
) -> list[Row]:
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix=f"digest-bench-{label(count)}-"))
    try:
        catalogue = make(work, count)
        size = label(count)
        target_size = count == 100_000

        def want(name: str) -> bool:
            return only is None or name in only

        def parse_floor() -> Sample:
            return run_child([PYTHON, FLOORS, "parse", str(catalogue)], work)

        def parse_feedgen_floor() -> Sample:
            fresh(work, "floor-out")
            return run_child(
                [PYTHON, FLOORS, "parse-feedgen", str(catalogue), str(work / "floor-out")], work
            )

        def cold() -> Sample:
            fresh(work, "out", ".digest")
            return run_child([DIGEST, "build", "-c", str(catalogue), "-o", "out"], work)

        if want("build-cold") or want("rss") or want("build-noop"):
            row = Row("build, cold", size, baseline_name="parse+feedgen floor")
            row.target = "<= 2.0" if target_size else ""
            rss = Row("peak RSS of cold build", size, baseline_name="parse floor", compare="rss")
            rss.target = "<= 1.5" if target_size else ""
            for rep in range(reps):
                row.baseline.append(parse_feedgen_floor())
                rss.baseline.append(parse_floor())
                row.subject.append(cold())
                progress(f"{row.name} {size} {rep + 1}/{reps}")
            rss.subject = row.subject
            rows += [row, rss]
            if want("build-noop"):
                noop = Row("build, no change", size, baseline_name="cold build")
                noop.baseline = row.subject
                noop.target = "<= 0.05" if target_size else ""
                cold()

                def again() -> Sample:
                    return run_child([DIGEST, "build", "-c", str(catalogue), "-o", "out"], work)

                alternate(noop, reps, None, again, progress)
                rows.append(noop)

        if want("build-edit"):
            row = Row("build, one item edited", size, baseline_name="parse floor")
            row.target = "<= 1.2" if target_size else ""
            cold()
            editions = iter(range(1, 1_000_000))

            def edited() -> Sample:
                # A different title each time, so that every run has a real change to publish.
                make(work, count, edition=next(editions))
                return run_child([DIGEST, "build", "-c", str(catalogue), "-o", "out"], work)

            try:
                alternate(row, reps, parse_floor, edited, progress)
            finally:
                make(work, count)
            rows.append(row)

        if want("check"):
            row = Row("check", size, baseline_name="parse floor")
            row.target = "<= 1.2" if target_size else ""

            def check() -> Sample:
                return run_child([DIGEST, "check", "-c", str(catalogue)], work)

            alternate(row, reps, parse_floor, check, progress)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def bench_start(reps: int, progress: Callable[[str], None]) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="digest-bench-start-"))
    try:
        shutil.copy(ROOT / "items.yaml", work / "items.yaml")
        shutil.copy(ROOT / "subscribers.csv", work / "subscribers.csv")
        subprocess.run([DIGEST, "build"], cwd=work, check=True, stdout=subprocess.DEVNULL)

        def floor() -> Sample:
            return run_child([PYTHON, FLOORS, "imports"], work)

        version = Row("start: digest --version", "", baseline_name="import yaml, feedgen.feed")
        version.target = "<= 1.5"
        alternate(version, reps, floor, lambda: run_child([DIGEST, "--version"], work), progress)
        noop = Row("start: no-op build (bundled)", "", baseline_name="import yaml, feedgen.feed")
        noop.target = "<= 1.5"
        alternate(noop, reps, floor, lambda: run_child([DIGEST, "build"], work), progress)
        return [version, noop]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_recipients(
    count: int,
    reps: int,
    only: set[str] | None,
    connections: int,
    progress: Callable[[str], None],
    sink_binary: str | None,
) -> list[Row]:
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix=f"digest-bench-r{label(count)}-"))
    size = label(count) + " recipients"
    target_size = count == 10_000
    try:
        catalogue = make(work, 1000, count)
        if only is None or "messages" in only:
            row = Row("personalised messages", size, baseline_name="bare EmailMessage")
            row.target = "<= 2.0" if target_size else ""
            alternate(
                row,
                reps,
                lambda: run_child([PYTHON, FLOORS, "messages", str(count)], work, timed=True),
                lambda: run_child(
                    [PYTHON, SUBJECTS, "messages", str(catalogue), MONTH], work, timed=True
                ),
                progress,
            )
            rows.append(row)
        if only is None or "send" in only:
            sink = Sink(sink_binary)
            try:
                row = Row(
                    f"send, {connections} connections",
                    size,
                    baseline_name=f"smtplib loop ({sink.name})",
                )
                # The target is a speed-up of at least 2: digest's time at most half the loop's.
                row.target = "<= 0.5" if target_size else ""
                env = {"DIGEST_SMTP_URL": f"smtp://127.0.0.1:{sink.port}"}

                def send() -> Sample:
                    fresh(work, ".digest")
                    argv = [DIGEST, "send", "--yes", "--month", MONTH, "-c", str(catalogue)]
                    argv += ["--connections", str(connections)]
                    return run_child(argv, work, env)

                alternate(
                    row,
                    reps,
                    lambda: run_child(
                        [PYTHON, FLOORS, "smtp-loop", str(count), str(sink.port)], work
                    ),
                    send,
                    progress,
                )
                rows.append(row)
                # The same sends, beside what a plain script that builds each message would take.
                script = Row(
                    f"send, {connections} connections",
                    size,
                    baseline_name=f"smtplib loop building each message ({sink.name})",
                )
                script.subject = row.subject
                for rep in range(reps):
                    script.baseline.append(
                        run_child(
                            [PYTHON, FLOORS, "smtp-build-loop", str(count), str(sink.port)], work
                        )
                    )
                    progress(f"{script.name} {script.size} (plain script) {rep + 1}/{reps}")
                rows.append(script)
            finally:
                sink.stop()
        if only is None or "send-dkim" in only:
            rows.append(
                bench_signed_send(work, catalogue, count, reps, connections, progress, sink_binary)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def bench_signed_send(
    work: Path,
    catalogue: Path,
    count: int,
    reps: int,
    connections: int,
    progress: Callable[[str], None],
    sink_binary: str | None,
) -> Row:
    """Time a send whose every message is DKIM-signed (RSA 2048) beside the same send unsigned.

    Both are `digest send` of the same catalogue to the same sink, alternating: the ratio is what
    signing costs, and the difference divided by the recipients is its cost a message.
    """
    signed = make(work / "signed", 1000, count, dkim="bench")
    key = signed.parent / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    sink = Sink(sink_binary)
    try:
        row = Row(
            f"send with DKIM, {connections} connections",
            label(count) + " recipients",
            baseline_name=f"the same send unsigned ({sink.name})",
        )
        env = {"DIGEST_SMTP_URL": f"smtp://127.0.0.1:{sink.port}"}

        def send(path: Path, extra: dict[str, str]) -> Sample:
            fresh(path.parent, ".digest")
            argv = [DIGEST, "send", "--yes", "--month", MONTH, "-c", str(path)]
            argv += ["--connections", str(connections)]
            return run_child(argv, path.parent, {**env, **extra})

        alternate(
            row,
            reps,
            lambda: send(catalogue, {}),
            lambda: send(signed, {"DIGEST_DKIM_KEY": str(key)}),
            progress,
        )
        return row
    finally:
        sink.stop()


def bench_shared(
    count: int,
    reps: int,
    connections: int,
    progress: Callable[[str], None],
    sink_binary: str | None,
) -> tuple[list[Row], list[str]]:
    """Time a send of `count` recipients: one process on SQLite and on PostgreSQL, then four.

    The four are `digest send` and three `digest worker --forever` started before it, on one
    PostgreSQL database (a throwaway cluster, tests/pgserver.py: synchronous_commit off, which
    is as durable as the SQLite ledger's WAL with synchronous=NORMAL); each process has its own
    smtp-sink, so that the sink is not what is measured. The send's time is `digest send`'s: it
    exits once no recipient is left, whoever sent it. Each sample also counts the CPU of every
    process in it (`digest`s, PostgreSQL's, the sinks) and how busy the machine was, for the
    notes under the table: on a machine without a free core per process the ratios measure it.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    import pgserver

    work = Path(tempfile.mkdtemp(prefix=f"digest-bench-w{label(count)}-"))
    size = label(count) + " recipients"
    sinks = [Sink(sink_binary) for _ in range(4)]
    try:
        catalogue = make(work, 1000, count)
        with pgserver.running(free_port()) as server:
            with server.admin() as admin:
                data = Path(str(admin.execute("SHOW data_directory").fetchone()[0]))
            postmaster = int((data / "postmaster.pid").read_text().split()[0])

            def sinks_cpu() -> float:
                return sum(_proc_cpu(sink.process.pid)[1] for sink in sinks)

            def worker(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
                argv = [DIGEST, "worker", "--forever", "--poll", "0.2", "-c", str(catalogue)]
                argv += ["--connections", str(connections)]
                own = {**os.environ, **env, "DIGEST_SMTP_URL": f"smtp://127.0.0.1:{port}"}
                return subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, env=own)

            def send(url: str | None, workers: int) -> Sample:
                fresh(work, ".digest")
                env = {"DIGEST_SMTP_URL": f"smtp://127.0.0.1:{sinks[0].port}"}
                if url is not None:
                    env["DIGEST_DATABASE_URL"] = url = server.database()
                idle = len(_children(postmaster))  # the server's own: checkpointer and so on
                before = (postgresql_cpu(postmaster), sinks_cpu(), busy_jiffies())
                helpers = [worker(env, sinks[n + 1].port) for n in range(workers - 1)]
                helpers_cpu = 0.0
                try:
                    argv = [DIGEST, "send", "--yes", "--month", MONTH, "-c", str(catalogue)]
                    sample = run_child([*argv, "--connections", str(connections)], work, env)
                finally:
                    for helper in helpers:
                        helper.terminate()
                        _, _, usage = os.wait4(helper.pid, 0)
                        helper.returncode = 0
                        helpers_cpu += usage.ru_utime + usage.ru_stime
                busy, ticks = busy_jiffies()
                sample.cpu = {"digest": sample.cpu.pop("process") + helpers_cpu}
                if url is not None:
                    sample.cpu["postgresql"] = postgresql_cpu(postmaster, idle) - before[0]
                sample.cpu["sinks"] = sinks_cpu() - before[1]
                sample.cpu["machine"] = (busy - before[2][0]) / max(1, ticks - before[2][1])
                return sample

            one = Row(
                f"send, 1 process on PostgreSQL, {connections} connections",
                size,
                baseline_name="the same on SQLite",
                target="<= 1.5",
            )
            alternate(one, reps, lambda: send(None, 1), lambda: send("pg", 1), progress)
            four = Row(
                f"send, 4 processes on PostgreSQL, {connections} connections each",
                size,
                baseline_name="1 process on PostgreSQL",
                target="<= 0.4",  # at least 2.5 times as fast
            )
            four.baseline = one.subject
            for rep in range(reps):
                four.subject.append(send("pg", 4))
                progress(f"{four.name} {four.size} {rep + 1}/{reps}")
            sqlite = Row(one.baseline_name, size, subject=one.baseline)
            sqlite.name = "send, 1 process on SQLite"
            return [one, four], [cpu_note(row, os.cpu_count() or 1) for row in (sqlite, one, four)]
    finally:
        for sink in sinks:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> tuple[int, float, float]:
    """Return a process's parent, its own CPU-seconds, and those of its children it reaped."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _children(parent: int) -> list[float]:
    """Return the CPU-seconds of each running child of `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid, own, _ = _proc_cpu(int(entry))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            if ppid == parent:
                found.append(own)
    return found


def postgresql_cpu(postmaster: int, processes: int | None = None) -> float:
    """Return the CPU-seconds of a PostgreSQL cluster so far: its postmaster, every process it
    runs (backends, checkpointer, ...) and those that have ended (which it reaped).

    `processes`: first wait (up to 5 s) until it runs no more than that many, so that the
    sessions of the clients that just exited have ended and are counted.
    """
    deadline = time.monotonic() + 5
    while processes is not None and len(_children(postmaster)) > processes:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)  # another program's processes: nothing to wait on but /proc
    _, own, reaped = _proc_cpu(postmaster)
    return sum(_children(postmaster)) + own + reaped


def busy_jiffies() -> tuple[int, int]:
    """Return (busy, all) ticks of every core since boot, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def cpu_note(row: Row, cores: int) -> str:
    """Say where a row's CPU went (medians): by process kind, against cores x wall."""
    kinds = sorted({kind for sample in row.subject for kind in sample.cpu} - {"machine"})
    if not kinds:
        return ""

    def used(sample: Sample) -> float:
        return sum(value for kind, value in sample.cpu.items() if kind != "machine")

    samples = row.subject
    medians = {kind: statistics.median(s.cpu.get(kind, 0) for s in samples) for kind in kinds}
    parts = [f"{kind} {value:.2f}" for kind, value in medians.items()]
    share = statistics.median(used(s) / (cores * s.seconds) for s in samples)
    busy = statistics.median(s.cpu.get("machine", float("nan")) for s in samples)
    return (
        f"CPU of '{row.name}' (medians, CPU-seconds): {', '.join(parts)}; all "
        f"{statistics.median(used(s) for s in samples):.2f}, {share:.0%} of {cores} cores x wall; "
        f"the machine was busy {busy:.0%} of the time (other programs included)"
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        ram = f"{int(memory) / 1024 / 1024:.0f} GB RAM"
    except OSError:
        ram = "unknown RAM"
    return (
        f"{os.cpu_count()} cores, {cpu}, {ram}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def table(rows: list[Row], reps: int) -> str:
    header = (
        f"{'benchmark':<30} {'size':<16} {'median':>9} {'peak RSS':>9} "
        f"{'baseline':>9} {'ratio':>7} {'target':>8}  verdict  (baseline)"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.compare == "rss":
            mine = f"{row.median(row.subject, 'rss'):.0f} MB"
            theirs = f"{row.median(row.baseline, 'rss'):.0f} MB"
            median = "—"
            rss = mine
        else:
            median = f"{row.median(row.subject, 'time'):.3f}s"
            rss = f"{row.median(row.subject, 'rss'):.0f} MB"
            theirs = f"{row.median(row.baseline, 'time'):.3f}s"
        lines.append(
            f"{row.name:<30} {row.size:<16} {median:>9} {rss:>9} {theirs:>9} "
            f"{row.ratio:>6.2f}x {row.target or '—':>8}  {row.verdict or '—':<7}  "
            f"({row.baseline_name})"
        )
    lines.append(f"medians of {reps} runs (fewer at 100k, see --big-reps); machine: {machine()}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="catalogue sizes")
    parser.add_argument("--recipients", default="1000,10000", help="subscriber counts")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each measurement")
    parser.add_argument("--big-reps", type=int, default=3, help="repetitions at 100k items")
    parser.add_argument("--connections", type=int, default=4, help="digest send --connections")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not install Debian's postfix for smtp-sink when it is missing (use aiosmtpd), "
        "nor, with --peers, Debian's hugo or Pelican",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated: build-cold, rss, build-noop, build-edit, check, start, messages, "
        "send, send-dkim, shared",
    )
    parser.add_argument(
        "--shared-recipients",
        type=int,
        default=100_000,
        help="subscribers of the shared-send rows (--only shared): SQLite, PostgreSQL, 4 senders",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="the peer rows: digest's cold and no-change builds beside Hugo's and Pelican's "
        "(bench/peers.py); alone, only those (add --only for others)",
    )
    parser.add_argument(
        "--peer-tools", default="hugo,pelican", help="comma-separated peers: hugo, pelican"
    )
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=None,
        help="where Pelican's own virtualenv is kept (default ~/.cache/digest-bench/peers)",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="results file")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    if args.peers and only is None:
        only = set()

    def progress(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    recipients = [int(s) for s in args.recipients.split(",") if s]
    compile_digest()
    sending = bool(recipients) and (only is None or bool({"send", "send-dkim"} & only))
    sending = sending or (only is not None and "shared" in only)
    sink_binary = smtp_sink(install=not args.no_install) if sending else None
    rows: list[Row] = []
    notes: list[str] = []
    for count in (int(s) for s in args.sizes.split(",") if s):
        reps = args.big_reps if count >= 100_000 else args.reps
        if only != set():
            rows += bench_items(count, reps, only, progress)
        if args.peers:
            import peers

            tools = tuple(t for t in args.peer_tools.split(",") if t)
            found, said = peers.bench_peers(
                count,
                reps,
                progress,
                tools,
                not args.no_install,
                args.peers_dir or peers.DEFAULT_PEERS_DIR,
            )
            rows += found
            notes += [note for note in said if note not in notes]
    if only is None or "start" in only:
        rows += bench_start(args.reps, progress)
    for count in recipients if only != set() else []:
        rows += bench_recipients(count, args.reps, only, args.connections, progress, sink_binary)
    if only is not None and "shared" in only:
        shared, said = bench_shared(
            args.shared_recipients, args.big_reps, args.connections, progress, sink_binary
        )
        rows += shared
        notes += said
    print(table(rows, args.reps))
    for note in notes:
        print(f"note: {note}")
    if sending and sink_binary is None:
        print(
            "note: the SMTP sink was aiosmtpd, which takes about 0.9 ms a message itself: the send "
            "rows measure the sink more than the sender (install postfix for smtp-sink)"
        )
    failed = [r for r in rows if r.verdict == "FAIL"]
    print(f"targets: {sum(1 for r in rows if r.verdict == 'pass')} met, {len(failed)} not met")
    args.json.write_text(
        json.dumps(
            {
                "machine": machine(),
                "rows": [
                    {
                        **{
                            k: v for k, v in asdict(row).items() if k not in ("subject", "baseline")
                        },
                        "subject_seconds": [s.seconds for s in row.subject],
                        "subject_rss_mb": [s.rss_mb for s in row.subject],
                        "baseline_seconds": [s.seconds for s in row.baseline],
                        "baseline_rss_mb": [s.rss_mb for s in row.baseline],
                        # CPU-seconds by process kind ("machine": how busy it was), where counted.
                        "subject_cpu": [s.cpu for s in row.subject],
                        "baseline_cpu": [s.cpu for s in row.baseline],
                        "ratio": row.ratio,
                        "verdict": row.verdict,
                    }
                    for row in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
