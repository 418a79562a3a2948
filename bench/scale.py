"""s3sync at scale: a mirror of many small objects, then a no-op pass, against one ``rclone serve s3``.

Run from the repository root::

    python -m bench.scale --objects 100000             # the issue's target
    python -m bench.scale --objects 5000 --out /tmp/S.md --keep
    python -m bench.scale --events --objects 20000   # events vs polling (bench/scale_events.py)

The issue's targets: "a mirror of 100,000 objects with peak RSS under 200 MiB (state on disk,
listings streamed), and a no-op pass over them that makes no per-object request".

Method:

1. One ``rclone serve s3`` (:class:`tests.support.servers.RcloneServer`). The bucket is created
   through the API (rclone ignores a top-level folder made behind its back), then its objects are
   written **directly as files** into ``data/<bucket>/<key>``: 100,000 PUTs through the server take
   more than 20 minutes, writing the files takes seconds. Keys are ``pNNNN/objNNNNNN.bin``, 100 per
   prefix, each 256 to 1024 bytes of seeded random data. rclone sees files written behind its back
   only until it has listed their folder: its VFS keeps a listed directory for ``--dir-cache-time``
   (5 minutes by default), so a file added after the first listing stays invisible until then.
   Every file is therefore written before the bucket's first listing, and a full boto3 listing
   then checks that the server shows exactly the expected keys and sizes before anything is timed.
   That untimed listing also warms the server's directory cache, so both timed passes meet a warm
   server (and a warm page cache), as a daemon's later passes do.
2. Pass 1, the mirror: ``s3sync sync --mirror-only`` into an empty folder with a fresh state
   database, straight to the server. Checked afterwards: the folder holds exactly the expected
   files with the expected sizes, and s3sync's summary says it downloaded every object.
3. Pass 2, the no-op: the same command with the same folder and state, but with
   ``S3_ENDPOINT_URL`` pointing at a counting proxy (:class:`tests.support.faultproxy.FaultProxy`,
   no fault set) in front of the same server, which records every request line. Checked: no file
   of the mirror folder was rewritten (inode, mtime, size) and the summary says ``downloaded 0``.

Each pass runs as a subprocess through :func:`bench.run.run_proc`: wall time from fork to exit, and
peak RSS from ``wait4`` (ru_maxrss of s3sync's process, taken by a small spawn helper so the
benchmark's own memory does not leak into it; ~5 MiB floor).

The request counts of pass 2 are by kind, from the proxy's record (path-style addressing, so the
first path segment is the bucket): ``LIST`` is a GET on the bucket root (``list-type=2`` or any
listing query); ``GET object``, ``HEAD object``, ``PUT``, ``DELETE``, ``POST`` name a key under the
bucket: these are the **per-object** requests, and a no-op pass must make none. ``HEAD bucket`` and
``other`` are per-pass costs, shown for completeness. Pass 1 goes straight to the server (a Python
proxy in front of 100,000 GETs would measure the proxy), so its requests are not counted.

The script exits 1 if a pass fails, a check fails, the no-op pass makes any per-object request, or
either pass peaks at or above 200 MiB; the report is printed (and written with ``--out``) anyway.
Everything lives under one work folder (``--workdir``, default a fresh temporary folder), removed
at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

from botocore.exceptions import BotoCoreError, ClientError

from bench.run import (
    MIB,
    BenchError,
    Proc,
    base_env,
    find_tools,
    library_versions,
    list_objects,
    log,
    machine,
    report_head,
    run_proc,
    s3sync_env,
)
from tests.support.faultproxy import FaultProxy
from tests.support.servers import HOST, RcloneServer, ServerError

BUCKET = "scale"
PER_PREFIX = 100
MIN_SIZE, MAX_SIZE = 256, 1024
MAX_OBJECTS = 999_999  # 6-digit object serials, 4-digit prefixes
TARGET_PEAK_RSS_MIB = 200.0
#: Request kinds that name one object: a no-op pass must make none of them.
PER_OBJECT_KINDS = ("GET object", "HEAD object", "PUT", "DELETE", "POST")
KINDS = ("LIST", *PER_OBJECT_KINDS, "HEAD bucket", "other")
#: Query parameters of a bucket-level GET that make it a listing (v1 or v2).
_LIST_PARAMS = {"list-type", "prefix", "delimiter", "marker", "continuation-token", "max-keys", "start-after"}


# --- the bucket ---------------------------------------------------------------------------------


def object_key(i: int) -> str:
    """The ``i``-th key: ``p0001/obj000123.bin``, 100 keys per prefix."""
    return f"p{i // PER_PREFIX:04d}/obj{i:06d}.bin"


def write_objects(root: Path, count: int, seed: int) -> dict[str, int]:
    """Write ``count`` object files under ``root`` (the bucket's folder); return key -> size.

    Behind the server's back, so only before the bucket's first listing (see the module docstring).
    """
    rng = random.Random(seed)
    expected: dict[str, int] = {}
    for i in range(count):
        key = object_key(i)
        if i % PER_PREFIX == 0:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(MIN_SIZE, MAX_SIZE))
        with open(root / key, "wb") as f:
            f.write(data)
        expected[key] = len(data)
    return expected


def check_listing(got: dict[str, int], expected: dict[str, int], where: str) -> None:
    """``got`` (key -> size) is exactly ``expected``."""
    if got == expected:
        return
    missing = sorted(set(expected) - set(got))[:5]
    extra = sorted(set(got) - set(expected))[:5]
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])[:5]
    raise BenchError(
        f"{where}: {len(got)} entries, expected {len(expected)} "
        f"(missing e.g. {missing}, unexpected e.g. {extra}, wrong size e.g. {wrong})"
    )


def folder_files(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``folder`` by key-like relative path: (size, inode, mtime_ns)."""
    files: dict[str, tuple[int, int, int]] = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = (st.st_size, st.st_ino, st.st_mtime_ns)
    return files


# --- requests -----------------------------------------------------------------------------------


def request_kind(method: str, target: str, bucket: str) -> str:
    """The kind of one proxied request (path-style: ``/<bucket>/<key>?<query>``)."""
    path, _, query = target.partition("?")
    segments = path.lstrip("/").split("/", 1)
    if segments[0] != bucket:
        return "other"  # ListBuckets or another bucket
    if len(segments) == 1 or not segments[1]:  # the bucket root
        params = {k for k, _ in parse_qsl(query, keep_blank_values=True)}
        if method == "GET" and (not params or params & _LIST_PARAMS):
            return "LIST"
        return "HEAD bucket" if method == "HEAD" else "other"
    return {"GET": "GET object", "HEAD": "HEAD object", "PUT": "PUT", "DELETE": "DELETE", "POST": "POST"}.get(
        method, "other"
    )


def count_requests(requests: Sequence[tuple[str, str]], bucket: str) -> Counter[str]:
    """Requests by kind (every kind of :data:`KINDS` present, zero when none)."""
    counts: Counter[str] = Counter(dict.fromkeys(KINDS, 0))
    counts.update(request_kind(m, t, bucket) for m, t in requests)
    return counts


# --- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class PassResult:
    """One timed pass of s3sync."""

    name: str
    proc: Proc | None = None
    requests: Counter[str] | None = None  # None: not counted (not proxied)
    examples: list[str] = dataclasses.field(default_factory=list)  # a few per-object requests, if any
    summary: str = ""
    error: str = ""

    @property
    def rss_mib(self) -> float | None:
        return self.proc.peak_rss_kib / 1024 if self.proc is not None else None

    @property
    def per_object(self) -> int | None:
        return None if self.requests is None else sum(self.requests[k] for k in PER_OBJECT_KINDS)


@dataclasses.dataclass(slots=True)
class Check:
    """One line of the checks table."""

    name: str
    value: str
    target: str
    ok: bool


@dataclasses.dataclass(slots=True)
class Scale:
    """Everything the report needs."""

    objects: int
    seed: int
    total_bytes: int = 0
    fill_s: float = 0.0
    listing_s: float = 0.0
    server_version: str = "unknown"
    s3sync_version: str = "unknown"
    passes: list[PassResult] = dataclasses.field(default_factory=list)
    checks: list[Check] = dataclasses.field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.checks) and all(not p.error for p in self.passes)


# --- the benchmark ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    objects: int
    seed: int
    out: Path | None
    workdir: Path | None
    keep: bool
    timeout: float


def _summary_line(stderr: str) -> str:
    """s3sync's own mirror summary (``mirror: listed N, downloaded N, ...``)."""
    for line in reversed(stderr.splitlines()):
        if "mirror: listed" in line:
            return line[line.index("mirror: listed") :].strip()
    return ""


def _run_pass(argv: Sequence[str], env: dict[str, str], run_dir: Path, timeout: float, result: PassResult) -> Proc:
    run_dir.mkdir()
    proc = run_proc(argv, env=env, cwd=run_dir, timeout=timeout)
    result.proc = proc
    result.summary = _summary_line(proc.stderr)
    log(f"{result.name}: {proc.seconds:.2f} s, peak RSS {proc.peak_rss_kib / 1024:.1f} MiB, exit {proc.returncode}")
    if proc.returncode != 0:
        log(f"{result.name}: the end of its output:\n{proc.tail()}")
        last = next((line.strip() for line in reversed(proc.stderr.splitlines()) if line.strip()), "no output")
        raise BenchError(f"{shlex.join(argv)} exited with {proc.returncode}: {last}")
    return proc


def run(opts: Options, work: Path, res: Scale) -> None:
    """Fill the bucket, then the two timed passes; results (and checks) go into ``res``."""
    s3sync = find_tools(["s3sync"])["s3sync"]
    res.s3sync_version = s3sync.version
    argv = [*s3sync.argv0, "sync", "--mirror-only"]
    with RcloneServer(workdir=work / "server") as server:
        res.server_version = _server_version(server)
        log(f"server: {res.server_version} at {server.endpoint}; work folder {work}")
        server.create_bucket(BUCKET)
        t0 = time.perf_counter()
        expected = write_objects(server.data_dir / BUCKET, opts.objects, opts.seed)
        res.fill_s = time.perf_counter() - t0
        res.total_bytes = sum(expected.values())
        log(f"wrote {opts.objects} object files ({res.total_bytes / MIB:.1f} MiB) in {res.fill_s:.1f} s")
        client = server.client()
        try:
            t0 = time.perf_counter()
            check_listing(list_objects(client, BUCKET), expected, f"the server's listing of bucket {BUCKET}")
            res.listing_s = time.perf_counter() - t0
        finally:
            client.close()
        log(f"the server lists exactly {opts.objects} objects with the right sizes ({res.listing_s:.1f} s)")

        upload, mirror, state = work / "upload", work / "mirror", work / "state.db"
        upload.mkdir()
        mirror.mkdir()
        env = s3sync_env(base_env(server), server, BUCKET, upload=upload, local=mirror, state=state)

        first = PassResult("mirror (pass 1)")
        res.passes.append(first)
        _run_pass(argv, env, work / "pass1", opts.timeout, first)
        files = folder_files(mirror)
        check_listing({k: v[0] for k, v in files.items()}, expected, f"the mirror folder {mirror}")
        res.checks.append(Check("mirror folder after pass 1", f"{len(files)} files, sizes match", "exact", True))
        _check_summary(res, first, f"downloaded {opts.objects} (")

        second = PassResult("no-op (pass 2, counted)")
        res.passes.append(second)
        proxy = FaultProxy(HOST, server.port).start()
        try:
            _run_pass(argv, {**env, "S3_ENDPOINT_URL": proxy.endpoint}, work / "pass2", opts.timeout, second)
        finally:  # counted even when the pass failed
            proxy.stop()
            requests = proxy.requests  # a property: a copy of every (method, target), in order
            second.requests = count_requests(requests, BUCKET)
            second.examples = [f"{m} {t}" for m, t in requests if request_kind(m, t, BUCKET) in PER_OBJECT_KINDS][:5]
        if proxy.errors:
            raise BenchError(f"the counting proxy failed: {proxy.errors[0]!r}")
        after = folder_files(mirror)
        changed = sum(1 for k in files.keys() | after.keys() if files.get(k) != after.get(k))
        res.checks.append(Check("mirror files changed by pass 2", str(changed), "0", changed == 0))
        _check_summary(res, second, "downloaded 0 (")


def _check_summary(res: Scale, result: PassResult, wanted: str) -> None:
    ok = wanted in result.summary and ", failed 0," in result.summary
    res.checks.append(Check(f"s3sync summary, {result.name}", f"`{result.summary or 'none'}`", f"`{wanted}`", ok))


def _server_version(server: RcloneServer) -> str:
    try:
        done = subprocess.run([server.binary, "version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def final_checks(res: Scale) -> None:
    """The issue's targets, from whatever the passes measured (a pass that did not run is a FAIL)."""
    for p in res.passes:
        rss = p.rss_mib
        res.checks.append(
            Check(
                f"peak RSS, {p.name}",
                "not measured" if rss is None else f"{rss:.1f} MiB",
                f"< {TARGET_PEAK_RSS_MIB:.0f} MiB",
                rss is not None and rss < TARGET_PEAK_RSS_MIB,
            )
        )
    noop = next((p for p in res.passes if p.name.startswith("no-op")), None)
    per_object = None if noop is None else noop.per_object
    res.checks.append(
        Check(
            "per-object requests, no-op pass",
            "not measured" if per_object is None else str(per_object),
            "0",
            per_object == 0,
        )
    )


# --- the report ---------------------------------------------------------------------------------


def render(res: Scale, command: str, started: dt.datetime, elapsed: float, mach: dict[str, str]) -> str:
    n = res.objects
    lines = [
        *report_head(f"s3sync at scale: a mirror of {n:,} objects, then a no-op pass", command, started, elapsed, mach),
        "## Setup",
        "",
        f"- s3sync: {res.s3sync_version}, `s3sync sync --mirror-only`, environment from `bench.run.s3sync_env` "
        "(defaults otherwise: S3_MAX_CONCURRENCY=8...)",
        *(f"- {k} (used by s3sync): {v}" for k, v in library_versions().items()),
        f"- server: `{res.server_version}` `serve s3` on 127.0.0.1, `--vfs-cache-mode off`",
        f"- bucket: {n:,} objects of {MIN_SIZE} to {MAX_SIZE} bytes ({res.total_bytes / MIB:.1f} MiB), "
        f"{PER_PREFIX} per prefix (`{object_key(0)}` ... `{object_key(max(n - 1, 0))}`), seed {res.seed}; "
        f"written as files into the server's folder in {res.fill_s:.1f} s, then listed through the server "
        f"(boto3, 1,000 keys a page) in {res.listing_s:.1f} s: exactly the expected keys and sizes",
        "- pass 1 (mirror): empty folder, fresh state database, straight to the server",
        "- pass 2 (no-op): same folder and state, through a counting proxy in front of the same server",
        "",
        "## Passes",
        "",
        "| pass | seconds | peak RSS MiB | requests | " + " | ".join(KINDS) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(KINDS),
    ]
    for p in res.passes:
        secs = f"{p.proc.seconds:.2f}" if p.proc is not None else "FAILED"
        rss = f"{p.rss_mib:.1f}" if p.rss_mib is not None else ""
        if p.requests is None:
            counts = ["not counted", *([""] * len(KINDS))]
        else:
            counts = [str(sum(p.requests.values())), *(str(p.requests[k]) for k in KINDS)]
        lines.append(f"| {p.name} | {secs} | {rss} | " + " | ".join(counts) + " |")
    lines.append("")
    for p in res.passes:
        if p.summary:
            lines.append(f"- {p.name}, s3sync says: `{p.summary}`")
        if p.examples:
            lines.append(f"- {p.name}, per-object requests, e.g.: " + ", ".join(f"`{e}`" for e in p.examples))
        if p.error:
            lines.append(f"- {p.name} FAILED: {p.error}")
    if res.error:
        lines.append(f"- FAILED: {res.error}")
    lines += [
        "",
        "## Checks",
        "",
        "| check | value | target | result |",
        "|---|---|---|---|",
        *(f"| {c.name} | {c.value} | {c.target} | {'pass' if c.ok else 'FAIL'} |" for c in res.checks),
        "",
        f"Result: {'pass' if res.ok else 'FAIL'}",
        "",
        "Peak RSS is `wait4`'s ru_maxrss of the s3sync process (~5 MiB floor from the spawn helper). "
        f"Per-object requests are {', '.join(PER_OBJECT_KINDS)} of a key; LIST is a GET on the bucket root.",
        "",
    ]
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--objects", type=int, default=100_000, help="objects in the bucket")
    p.add_argument("--seed", type=int, default=1, help="seed of the object sizes and contents")
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    p.add_argument("--workdir", type=Path, default=None, help="an empty or new folder (default: a fresh temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (server data, mirror, state, logs)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before one pass is killed")
    a = p.parse_args(argv)
    if not 1 <= a.objects <= MAX_OBJECTS:
        p.error(f"--objects must be within 1..{MAX_OBJECTS}")
    workdir: Path | None = a.workdir.resolve() if a.workdir is not None else None
    if workdir is not None and workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        p.error(f"--workdir {workdir} must be a new or empty folder (it is removed at the end unless --keep)")
    return Options(
        objects=a.objects,
        seed=a.seed,
        out=a.out.resolve() if a.out is not None else None,
        workdir=workdir,
        keep=a.keep,
        timeout=a.timeout,
    )


@contextlib.contextmanager
def _workdir(path: Path | None, keep: bool) -> Iterator[Path]:
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="s3sync-scale-"))
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
    args = list(sys.argv[1:] if argv is None else argv)
    if "--events" in args:  # events vs polling: bench/scale_events.py
        from bench import scale_events

        return scale_events.main([a for a in args if a != "--events"])
    opts = parse_args(argv)
    started = dt.datetime.now(dt.UTC).astimezone()
    t0 = time.monotonic()
    mach = machine()
    res = Scale(objects=opts.objects, seed=opts.seed)
    with _workdir(opts.workdir, opts.keep) as work:
        try:
            run(opts, work, res)
        except (BenchError, ServerError, OSError, ClientError, BotoCoreError) as exc:
            first_line = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if res.passes:  # the pass that was running, or whose check failed
                res.passes[-1].error = first_line
            else:
                res.error = first_line
            log(f"!!! FAILED: {exc}")
    final_checks(res)
    command = shlex.join(["python", "-m", "bench.scale", *(sys.argv[1:] if argv is None else argv)])
    doc = render(res, command, started, time.monotonic() - t0, mach)
    if opts.out is not None:
        opts.out.write_text(doc + "\n")
        log(f"wrote {opts.out}")
    print(doc)
    if not res.ok:
        log("SOME CHECKS FAILED (see the report)")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
