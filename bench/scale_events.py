"""Events vs polling at scale: change latency and an idle daemon's requests, with N objects in the bucket.

Run from the repository root (``python -m bench.scale --events`` is the same)::

    python -m bench.scale_events --objects 20000 --out /tmp/events.md
    python -m bench.scale_events --objects 300 --changes 5 --spacing 0.3 --poll-interval 2 --idle 4   # smoke

The issue's targets: "with 100,000 objects in the bucket, the time from PutObject to the file in
the mirror (p50, p99 over 50 changes) with events vs polling, and the requests an idle daemon
sends per hour in each mode ... p50 under 2 s with events, and an idle daemon's requests per
hour independent of the bucket's size".

Method:

1. One ``moto_server`` (S3, SQS and SNS on one port; it delivers bucket notifications to SQS).
   ``--objects`` objects of 256 to 1024 bytes are written into moto's memory before it serves
   (:mod:`bench.moto_filled`: 100,000 PUTs through HTTP take 6 to 11 minutes here), so no event
   of the fill reaches the queue. Then ``s3sync events setup --queue`` wires the bucket to a new
   queue, ``s3sync events check`` proves the wiring, and ``s3sync sync --mirror-only`` mirrors
   the bucket once, straight to the server (timed, not counted).
2. One mirror folder and state database serve both modes, each run as ``s3sync run`` (a
   subprocess, JSON logs) whose every request goes through a counting proxy
   (:class:`tests.support.faultproxy.FaultProxy`, no fault; SQS requests are told apart by their
   ``X-Amz-Target``). **Events** first: ``S3_EVENTS_QUEUE_URL`` names the queue through the proxy;
   its start-up reconciliation lists the whole bucket and finds nothing to do. **Polling**
   second, with the same folder and state, ``S3_MIRROR_INTERVAL=--poll-interval`` (60 s, the
   default).
3. In each mode, after the first complete pass: an **idle window** of ``--idle`` seconds in which
   nothing changes, every request counted; requests per hour = count x 3600 / window. Then
   ``--changes`` new objects are PUT straight to the server (not through the proxy), one every
   ``--spacing`` seconds, so that the changes fall at every phase of a polling interval; the
   latency of each is from just before its PutObject to the moment its file is in the mirror
   folder with the right size (checked every 10 ms).

The script exits 1 when a mode fails, a change never arrives (``--change-timeout``), the events
p50 is not under 2 s, or the idle events daemon sends any S3 request (whose number would grow
with the bucket). Everything lives in one work folder, removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from bench.run import BenchError, _percentile, find_tools, library_versions, log, machine, report_head
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.servers import HOST, S3Server, ServerError

BUCKET = "scale-events"
QUEUE = "s3sync-bench"
PER_PREFIX = 100
MIN_SIZE, MAX_SIZE = 256, 1024
TARGET_EVENTS_P50_S = 2.0
MODES = ("events", "polling")
REPO = Path(__file__).resolve().parent.parent


def object_key(i: int) -> str:
    """The ``i``-th key of the fill: ``p0001/obj000123.bin``, 100 keys per prefix."""
    return f"p{i // PER_PREFIX:04d}/obj{i:06d}.bin"


def change_key(mode: str, i: int) -> str:
    """The key of the ``i``-th change of ``mode``: new objects, each its own file in the mirror."""
    return f"changes/{mode}-{i:03d}.bin"


def request_kind(method: str, target: str, amz_target: str) -> str:
    """``SQS <Operation>`` for an SQS JSON request, else the S3 kind (LIST, GET object, HEAD object...)."""
    if amz_target.startswith("AmazonSQS."):
        return "SQS " + amz_target.removeprefix("AmazonSQS.")
    path, _, query = target.partition("?")
    segments = path.lstrip("/").split("/", 1)
    if segments[0] != BUCKET:
        return "other"
    if len(segments) == 1 or not segments[1]:
        if method == "GET" and ("list-type" in query or not query):
            return "LIST"
        return f"{method} bucket"
    return {"GET": "GET object", "HEAD": "HEAD object"}.get(method, f"{method} object")


class RequestSpy:
    """Counts the requests the proxy forwards, by kind, with the time each arrived."""

    def __init__(self, proxy: FaultProxy) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[float, str]] = []
        proxy.set_faults([Fault("delay", match=self._match, seconds=0)])

    def _match(self, method: str, target: str, headers: Mapping[str, str]) -> bool:
        kind = request_kind(method, target, headers.get("x-amz-target", ""))
        with self._lock:
            self._seen.append((time.monotonic(), kind))
        return False  # never a fault: only a look

    def between(self, start: float, end: float) -> Counter[str]:
        """Requests by kind that arrived within [start, end)."""
        with self._lock:
            return Counter(kind for t, kind in self._seen if start <= t < end)


class Daemon:
    """``s3sync run`` as a subprocess; its JSON log lines are kept (and written to a file) as they come."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.lines: deque[str] = deque(maxlen=60)
        self._cond = threading.Condition()
        assert self.proc.stderr is not None
        self._thread = threading.Thread(target=self._drain, args=(self.proc.stderr, log_path), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes], path: Path) -> None:
        with open(path, "w") as out:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                out.write(line + "\n")
                with self._cond:
                    self.lines.append(line)
                    with contextlib.suppress(ValueError):
                        doc = json.loads(line)
                        if isinstance(doc, dict):
                            self.events.append((time.monotonic(), doc))
                    self._cond.notify_all()

    def wait_for(self, name: str, timeout: float, since: float = 0.0, **fields: object) -> tuple[float, dict[str, Any]]:
        """The first event ``name`` logged after ``since`` whose fields include ``fields``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, doc in self.events:
                    if t >= since and doc.get("event") == name and all(doc.get(k) == v for k, v in fields.items()):
                        return t, doc
                if self.proc.poll() is not None:
                    raise BenchError(f"s3sync run exited with {self.proc.returncode} before {name}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"no {name} {fields or ''} within {timeout:g} s:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def named(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        with self._cond:
            return [(t, d) for t, d in self.events if d.get("event") == name]

    def tail(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self._thread.join(5)
        return rc


@dataclasses.dataclass(slots=True)
class ModeResult:
    """What one mode measured."""

    mode: str
    first_pass_s: float | None = None
    first_pass: str = ""
    idle_window_s: float = 0.0
    idle: Counter[str] = dataclasses.field(default_factory=Counter)
    latencies: list[float] = dataclasses.field(default_factory=list)
    error: str = ""

    @property
    def idle_per_hour(self) -> float | None:
        return sum(self.idle.values()) * 3600 / self.idle_window_s if self.idle_window_s else None

    @property
    def idle_s3(self) -> int:
        return sum(n for kind, n in self.idle.items() if not kind.startswith("SQS "))


@dataclasses.dataclass(slots=True)
class Result:
    objects: int
    fill_s: float = 0.0
    sync_s: float = 0.0
    sync_line: str = ""
    setup_lines: list[str] = dataclasses.field(default_factory=list)
    check_line: str = ""
    modes: dict[str, ModeResult] = dataclasses.field(default_factory=dict)
    checks: list[tuple[str, str, str, bool]] = dataclasses.field(default_factory=list)
    error: str = ""
    s3sync_version: str = "unknown"
    moto_version: str = "unknown"

    @property
    def ok(self) -> bool:
        return not self.error and all(c[3] for c in self.checks) and all(not m.error for m in self.modes.values())


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    objects: int
    changes: int
    spacing: float
    poll_interval: float
    idle: float
    change_timeout: float
    seed: int
    out: Path | None
    workdir: Path | None
    keep: bool


# --- the benchmark ------------------------------------------------------------------------------
class FilledMoto(S3Server):
    """moto_server whose bucket :data:`BUCKET` holds ``count`` objects from the start (:mod:`bench.moto_filled`)."""

    kind: ClassVar[str] = "moto"

    def __init__(self, count: int, seed: int, workdir: Path) -> None:
        self.count, self.seed = count, seed
        super().__init__(workdir=workdir, startup_timeout=1800.0)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.moto_filled", str(self.port), BUCKET, str(self.count), str(self.seed)]

    def env(self) -> dict[str, str]:
        return {**super().env(), "PYTHONPATH": str(REPO)}


def s3sync_cli(argv0: Sequence[str], args: Sequence[str], env: dict[str, str], cwd: Path, *, err: bool = False) -> Any:
    """Run ``s3sync ARGS``: its stdout lines, or (``err``) the last line of its stderr."""
    done = subprocess.run([*argv0, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise BenchError(f"s3sync {shlex.join(args)} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stderr.strip().splitlines()[-1] if err else done.stdout.splitlines()


def measure_changes(server: S3Server, mode: str, opts: Options, mirror: Path, daemon: Daemon) -> list[float]:
    """PUT ``opts.changes`` new objects, one every ``opts.spacing`` s; latency of each to its file in the mirror."""
    client = server.client()
    rng = random.Random(f"{opts.seed}-{mode}")
    pending: dict[int, tuple[float, Path, int]] = {}
    latencies: dict[int, float] = {}
    next_put = time.monotonic()
    i = 0
    try:
        while i < opts.changes or pending:
            now = time.monotonic()
            if i < opts.changes and now >= next_put:
                body = rng.randbytes(rng.randint(MIN_SIZE, MAX_SIZE))
                key = change_key(mode, i)
                t0 = time.monotonic()
                client.put_object(Bucket=BUCKET, Key=key, Body=body)
                pending[i] = (t0, mirror / key, len(body))
                i += 1
                next_put += opts.spacing
            for n, (t0, path, size) in list(pending.items()):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_size == size:
                        latencies[n] = time.monotonic() - t0
                        del pending[n]
                        continue
                if time.monotonic() - t0 > opts.change_timeout:
                    raise BenchError(f"{mode}: {path.name} not in the mirror {opts.change_timeout:g} s after its PUT")
            if daemon.proc.poll() is not None:
                raise BenchError(f"{mode}: s3sync run exited with {daemon.proc.returncode}:\n{daemon.tail()}")
            time.sleep(0.01)
    finally:
        client.close()
    return [latencies[n] for n in sorted(latencies)]


def run_mode(
    mode: str,
    server: S3Server,
    proxy: FaultProxy,
    spy: RequestSpy,
    argv0: Sequence[str],
    env: dict[str, str],
    work: Path,
    opts: Options,
    res: ModeResult,
) -> None:
    """One daemon in ``mode``: first pass, idle window, changes."""
    run_dir = work / f"run-{mode}"
    run_dir.mkdir()
    t0 = time.monotonic()
    daemon = Daemon([*argv0, "run"], env, run_dir, work / f"daemon-{mode}.log")
    try:
        first = "mirror.reconciled" if mode == "events" else "mirror.completed"
        t1, doc = daemon.wait_for(first, timeout=3600)
        res.first_pass_s = t1 - t0
        fields = ("listed", "downloaded", "differences", "duration_ms")
        res.first_pass = ", ".join(f"{k} {doc[k]}" for k in fields if k in doc)
        log(f"{mode}: first pass after {res.first_pass_s:.1f} s ({res.first_pass})")
        if mode == "polling":  # idle from the end of a pass: the window then holds whole intervals
            t1, _ = daemon.wait_for("mirror.completed", timeout=3600, since=t1 + 0.001)
        start = time.monotonic()
        time.sleep(opts.idle)
        end = time.monotonic()
        res.idle_window_s = end - start
        res.idle = spy.between(start, end)
        log(f"{mode}: idle {res.idle_window_s:.0f} s: {dict(res.idle)} ({res.idle_per_hour:.0f} requests/hour)")
        res.latencies = measure_changes(server, mode, opts, work / "mirror", daemon)
        log(
            f"{mode}: {len(res.latencies)} changes, p50 {_percentile(res.latencies, 50):.2f} s, "
            f"p99 {_percentile(res.latencies, 99):.2f} s"
        )
    finally:
        rc = daemon.stop()
        if rc != 0 and not res.error:
            res.error = f"s3sync run exited with {rc} after SIGTERM"


def run(opts: Options, work: Path, res: Result) -> None:
    s3sync = find_tools(["s3sync"])["s3sync"]
    res.s3sync_version = s3sync.version
    import moto

    res.moto_version = moto.__version__
    log(f"moto_server {res.moto_version}: starting with {opts.objects} objects in bucket {BUCKET}")
    t0 = time.perf_counter()
    with FilledMoto(opts.objects, opts.seed, work / "server") as server:
        res.fill_s = time.perf_counter() - t0
        log(f"moto_server at {server.endpoint} answers after {res.fill_s:.1f} s")
        (work / "mirror").mkdir()
        (work / "upload").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}
        env |= {
            "AWS_EC2_METADATA_DISABLED": "true",
            "S3_BUCKET_NAME": BUCKET,
            "S3_ENDPOINT_URL": server.endpoint,
            "S3_AWS_ACCESS_KEY_ID": server.access_key,
            "S3_AWS_SECRET_ACCESS_KEY": server.secret_key,
            "S3_REGION": server.region,
            "S3_LOCAL_PATH": str(work / "mirror"),
            "S3_UPLOAD_DIR_PATH": str(work / "upload"),
            "S3_STATE_PATH": str(work / "state.db"),
            "S3_LOG_FORMAT": "json",
            "S3_LOG_LEVEL": "info",
        }
        res.setup_lines = s3sync_cli(s3sync.argv0, ["events", "setup", "--queue", QUEUE], env, work)
        url = res.setup_lines[-1].partition("=")[2]
        res.check_line = s3sync_cli(s3sync.argv0, ["events", "check", "--queue-url", url], env, work)[-1]
        log(res.check_line)
        t0 = time.perf_counter()
        res.sync_line = s3sync_cli(
            s3sync.argv0, ["sync", "--mirror-only"], {**env, "S3_LOG_LEVEL": "warning"}, work, err=True
        )
        res.sync_s = time.perf_counter() - t0
        log(f"initial mirror: {res.sync_s:.1f} s: {res.sync_line}")
        _purge(server, url)  # the configuration's s3:TestEvent: not part of an idle daemon's traffic
        with FaultProxy(HOST, server.port, timeout=60.0) as proxy:
            spy = RequestSpy(proxy)
            through = url.replace(server.endpoint, proxy.endpoint)
            envs = {
                "events": {
                    **env,
                    "S3_ENDPOINT_URL": proxy.endpoint,
                    "S3_EVENTS_QUEUE_URL": through,
                    "S3_MIRROR_INTERVAL": str(opts.poll_interval),
                },
                "polling": {**env, "S3_ENDPOINT_URL": proxy.endpoint, "S3_MIRROR_INTERVAL": str(opts.poll_interval)},
            }
            for mode in MODES:
                res.modes[mode] = ModeResult(mode)
                try:
                    run_mode(mode, server, proxy, spy, s3sync.argv0, envs[mode], work, opts, res.modes[mode])
                except (BenchError, OSError, ClientError, BotoCoreError) as exc:
                    res.modes[mode].error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                    log(f"!!! {mode} FAILED: {exc}")
            if proxy.errors:
                raise BenchError(f"the counting proxy failed: {proxy.errors[0]!r}")


def _purge(server: S3Server, url: str) -> None:
    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
    try:
        sqs.purge_queue(QueueUrl=url)
    finally:
        sqs.close()


def final_checks(res: Result) -> None:
    events, polling = res.modes.get("events"), res.modes.get("polling")
    p50 = _percentile(events.latencies, 50) if events and events.latencies else None
    res.checks.append(
        (
            "events: p50 PutObject -> file in the mirror",
            "not measured" if p50 is None else f"{p50:.2f} s",
            f"< {TARGET_EVENTS_P50_S:g} s",
            p50 is not None and p50 < TARGET_EVENTS_P50_S,
        )
    )
    s3 = events.idle_s3 if events and events.idle_window_s else None
    res.checks.append(
        (
            "events: S3 requests of the idle daemon (each would grow with the bucket)",
            "not measured" if s3 is None else str(s3),
            "0",
            s3 == 0,
        )
    )
    for mode in (events, polling):
        if mode is not None:
            res.checks.append(
                (f"{mode.mode}: changes that reached the mirror", str(len(mode.latencies)), "all", not mode.error)
            )


# --- the report ---------------------------------------------------------------------------------
def _fmt(x: float | None, unit: str = " s") -> str:
    return "" if x is None else f"{x:.2f}{unit}"


def render(res: Result, opts: Options, command: str, started: dt.datetime, elapsed: float, mach: dict[str, str]) -> str:
    n = res.objects
    lines = [
        *report_head(f"s3sync events vs polling with {n:,} objects in the bucket", command, started, elapsed, mach),
        "## Setup",
        "",
        f"- s3sync: {res.s3sync_version}, `s3sync run` (JSON logs), one mirror folder and state for both modes",
        *(f"- {k} (used by s3sync): {v}" for k, v in library_versions().items()),
        f"- server: moto_server {res.moto_version} (S3 and SQS on one port, bucket notifications delivered to SQS)",
        f"- bucket: {n:,} objects of {MIN_SIZE} to {MAX_SIZE} bytes ({PER_PREFIX} per prefix), written into moto's "
        f"memory before it served (`bench/moto_filled.py`; answering after {res.fill_s:.1f} s), before the bucket "
        "was wired: no event of the fill reaches the queue",
        f"- initial mirror, straight to the server (not counted): `s3sync sync --mirror-only` in {res.sync_s:.1f} s: "
        f"`{res.sync_line}`",
        "- wiring: `s3sync events setup --queue "
        + QUEUE
        + "` said: "
        + "; ".join(f"`{line}`" for line in res.setup_lines[:-1]),
        f"- `s3sync events check`: `{res.check_line}`",
        f"- events mode: `S3_EVENTS_QUEUE_URL` (long poll 20 s), `S3_MIRROR_INTERVAL={opts.poll_interval:g}` "
        "(used only while the queue is unreachable), reconciliation at start then every 6 h",
        f"- polling mode: `S3_MIRROR_INTERVAL={opts.poll_interval:g}` (seconds from the end of one pass to the next)",
        f"- changes: {opts.changes} new objects per mode, one every {opts.spacing:g} s, PUT straight to the server; "
        "latency from before the PUT to the file in the mirror with its size (checked every 10 ms)",
        f"- idle: a window of {opts.idle:g} s with no change; every request of the daemon counted by a proxy in front "
        "of the server (SQS operations by `X-Amz-Target`); per hour = count x 3600 / window",
        "",
        "## Results",
        "",
        "| mode | first pass | p50 | p99 | max | idle window | idle requests | idle requests/hour | by kind |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in MODES:
        m = res.modes.get(mode)
        if m is None:
            continue
        lat = m.latencies
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(m.idle.items())) or "none"
        first = f"{m.first_pass_s:.1f} s ({m.first_pass})" if m.first_pass_s is not None else "FAILED"
        per_hour = m.idle_per_hour
        lines.append(
            f"| {mode} | {first} | {_fmt(_percentile(lat, 50) if lat else None)} | "
            f"{_fmt(_percentile(lat, 99) if lat else None)} | {_fmt(max(lat) if lat else None)} | "
            f"{m.idle_window_s:.0f} s | {sum(m.idle.values())} | "
            f"{'' if per_hour is None else f'{per_hour:,.0f}'} | {kinds} |"
        )
    lines.append("")
    for mode in MODES:
        m = res.modes.get(mode)
        if m is not None and m.error:
            lines.append(f"- {mode} FAILED: {m.error}")
    if res.error:
        lines.append(f"- FAILED: {res.error}")
    lines += [
        "",
        "## Checks",
        "",
        "| check | value | target | result |",
        "|---|---|---|---|",
        *(f"| {name} | {value} | {target} | {'pass' if ok else 'FAIL'} |" for name, value, target, ok in res.checks),
        "",
        f"Result: {'pass' if res.ok else 'FAIL'}",
        "",
    ]
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.scale_events", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--objects", type=int, default=100_000, help="objects in the bucket")
    p.add_argument("--changes", type=int, default=50, help="changes timed per mode")
    p.add_argument("--spacing", type=float, default=1.2, help="seconds between two changes")
    p.add_argument("--poll-interval", type=float, default=60.0, help="S3_MIRROR_INTERVAL of the polling mode")
    p.add_argument("--idle", type=float, default=180.0, help="seconds of the idle window of each mode")
    p.add_argument("--change-timeout", type=float, default=600.0, help="seconds before a change counts as lost")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    p.add_argument("--workdir", type=Path, default=None, help="an empty or new folder (default: a fresh temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (server log, mirror, state, daemon logs)")
    a = p.parse_args(argv)
    if not 1 <= a.objects <= 999_999:
        p.error("--objects must be within 1..999999")
    if a.changes < 1:
        p.error("--changes must be at least 1")
    workdir: Path | None = a.workdir.resolve() if a.workdir is not None else None
    if workdir is not None and workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        p.error(f"--workdir {workdir} must be a new or empty folder")
    return Options(
        objects=a.objects,
        changes=a.changes,
        spacing=a.spacing,
        poll_interval=a.poll_interval,
        idle=a.idle,
        change_timeout=a.change_timeout,
        seed=a.seed,
        out=a.out.resolve() if a.out is not None else None,
        workdir=workdir,
        keep=a.keep,
    )


@contextlib.contextmanager
def _workdir(path: Path | None, keep: bool) -> Iterator[Path]:
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="s3sync-scale-events-"))
    else:
        path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if keep:
            log(f"kept the work folder {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = dt.datetime.now(dt.UTC).astimezone()
    t0 = time.monotonic()
    mach = machine()
    res = Result(objects=opts.objects)
    with _workdir(opts.workdir, opts.keep) as work:
        try:
            run(opts, work, res)
        except (BenchError, ServerError, OSError, ClientError, BotoCoreError) as exc:
            res.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            log(f"!!! FAILED: {exc}")
    final_checks(res)
    command = shlex.join(["python", "-m", "bench.scale_events", *(sys.argv[1:] if argv is None else argv)])
    doc = render(res, opts, command, started, time.monotonic() - t0, mach)
    if opts.out is not None:
        opts.out.write_text(doc + "\n")
        log(f"wrote {opts.out}")
    print(doc)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
