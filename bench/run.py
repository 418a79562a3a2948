"""s3sync against its peers (aws-cli v1, s5cmd, rclone) on one local ``rclone serve s3``.

Run from the repository root::

    python -m bench.run                 # every scenario, 3 rounds, writes BENCHMARKS.md
    python -m bench.run --smoke --out /tmp/B.md

Every tool runs as a subprocess against the same server in the same run, configured through its
environment only (no file in ``$HOME``). Each timed run gets a fresh bucket and fresh folders; the
order of the tools rotates from round to round so no tool always runs first (cold caches) or last,
and before the timed rounds of a scenario one untimed warm-up run (by the tool that runs last in
round 1) leaves the machine as busy as every later run finds it: the very first run of a scenario
no longer meets an idle server and a clean page cache.
Each run is timed by wall clock from spawn to exit, and its peak RSS comes from ``wait4`` on the
child (the largest process of its tree). After every timed run an untimed check compares the
destination with what was expected: a fast wrong tool is not a result, so a mismatch fails the run.

Scenarios: ``upload`` (folder -> empty bucket), ``mirror`` (bucket -> empty folder), ``noop``
(re-sync of a folder and bucket already in step), ``large`` (one big file up, then down) and
``daemon`` (s3sync only: latency from a file renamed into the watched folder to the object being
readable).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from tests.support.servers import RcloneServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

REPO = Path(__file__).resolve().parent.parent
PEERS = ("aws", "s5cmd", "rclone")
TOOLS = ("s3sync", *PEERS)
SCENARIOS = ("upload", "mirror", "upload-layout", "mirror-layout", "noop", "large", "daemon")
FILE_SIZE = 64 * 1024
MIB = 1024 * 1024
# Targets for the daemon (issue 5).
TARGET_P50_MS = 150.0
TARGET_P99_MS = 500.0
TARGET_IDLE_RSS_MIB = 80.0
# Anything in the caller's environment that could reconfigure a tool.
_ENV_DROP_PREFIXES = ("AWS_", "S3_", "RCLONE_", "MOTO_")
_ENV_DROP_NAMES = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"}


class BenchError(RuntimeError):
    """A run failed or produced a wrong result."""


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- tools --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    """One benchmarked program: where it is and which version."""

    name: str
    argv0: tuple[str, ...]  # empty when not installed
    version: str

    @property
    def installed(self) -> bool:
        return bool(self.argv0)


def _which(name: str) -> str | None:
    """``name`` next to this Python (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    text = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return text[0].strip() if text else "unknown"


def find_tools(wanted: Sequence[str]) -> dict[str, Tool]:
    """Locate each wanted tool and record its version; a missing one is kept as "not installed"."""
    tools: dict[str, Tool] = {}
    for name in wanted:
        if name == "s3sync":
            import s3sync

            exe = _which("s3sync")
            argv0 = (exe,) if exe else (sys.executable, "-m", "s3sync")
            tools[name] = Tool(name, argv0, f"s3sync {s3sync.__version__}")
            continue
        exe = _which(name)
        if exe is None:
            tools[name] = Tool(name, (), "not installed")
            continue
        version_args = {"aws": ["--version"], "s5cmd": ["version"], "rclone": ["version"]}[name]
        tools[name] = Tool(name, (exe,), _first_line([exe, *version_args]))
    return tools


def library_versions() -> dict[str, str]:
    """The Python libraries s3sync runs on (the peers bring their own)."""
    import boto3
    import botocore

    return {"boto3": boto3.__version__, "botocore": botocore.__version__}


# --- environments -------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_ENV_DROP_PREFIXES) and k not in _ENV_DROP_NAMES}


def base_env(server: RcloneServer) -> dict[str, str]:
    """The environment every tool gets: credentials for the server, nothing read from ``$HOME``."""
    env = _clean_env()
    env.update(
        # aws-cli and s5cmd
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION=server.region,
        AWS_REGION=server.region,
        # botocore >= 1.36 integrity defaults break rclone serve s3 (REFERENCE.md).
        AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
        AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        # rclone: a remote named "bench" defined by the environment alone.
        RCLONE_CONFIG=os.devnull,
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=server.access_key,
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=server.secret_key,
        RCLONE_CONFIG_BENCH_ENDPOINT=server.endpoint,
        RCLONE_CONFIG_BENCH_REGION=server.region,
    )
    return env


def s3sync_env(
    base: dict[str, str], server: RcloneServer, bucket: str, *, upload: Path, local: Path, state: Path
) -> dict[str, str]:
    """s3sync's settings for one run: keys are bare file names, like the peers' uploads."""
    env = dict(base)
    env.update(
        S3_BUCKET_NAME=bucket,
        S3_ENDPOINT_URL=server.endpoint,
        S3_AWS_ACCESS_KEY_ID=server.access_key,
        S3_AWS_SECRET_ACCESS_KEY=server.secret_key,
        S3_REGION=server.region,
        S3_UPLOAD_DIR_PATH=str(upload),
        S3_LOCAL_PATH=str(local),
        S3_STATE_PATH=str(state),
        S3_KEY_TEMPLATE="{name}",
        S3_LOG_LEVEL="warning",
        S3_MIRROR_INTERVAL="0",
    )
    return env


# --- running one process ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Proc:
    """The outcome of one subprocess."""

    argv: tuple[str, ...]
    seconds: float
    peak_rss_kib: int
    returncode: int
    stdout: str
    stderr: str

    def tail(self, chars: int = 1500) -> str:
        return (self.stdout[-chars // 2 :] + "\n" + self.stderr[-chars:]).strip()


# Linux keeps a forked child's pre-exec peak RSS in its ru_maxrss (fs/exec.c: exec_mmap), so a tool
# forked by this process (100+ MiB with the corpus hashes and boto3) would report at least that much,
# measured: /bin/true "peaked" at 311 MiB. The tool is therefore forked by this small helper
# (python -I -S, ~9 MiB), whose fork carries ~5 MiB: the floor of every RSS figure. The helper also
# times the tool from fork to exit (its own start-up is not counted) and forwards SIGTERM/SIGINT.
_HELPER = r"""
import os, signal, sys, time
result, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
def forward(signum, frame):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
with open(result + ".pid", "w") as f:
    f.write(str(pid))
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(result, "w") as f:
    f.write(f"{seconds!r} {usage.ru_maxrss}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


class Spawned:
    """A tool started through :data:`_HELPER`, in its own process group (a timeout kills the group)."""

    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str], cwd: Path, stdout: IO[bytes] | int, stderr: IO[bytes] | int
    ) -> None:
        self.argv = tuple(argv)
        fd, name = tempfile.mkstemp(prefix=".bench-", dir=cwd)
        os.close(fd)
        os.unlink(name)
        self._result = Path(name)
        self.popen = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HELPER, name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def child_pid(self, timeout: float = 10.0) -> int:
        """The tool's own pid (the helper's child)."""
        deadline = time.monotonic() + timeout
        pid_file = Path(f"{self._result}.pid")
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(pid_file.read_text())
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise BenchError(f"no pid from the spawn helper for {shlex.join(self.argv)}")
            time.sleep(0.01)

    def terminate(self) -> None:
        """SIGTERM to the tool (through the helper)."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the helper and the tool."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> tuple[int, float, int]:
        """(exit code, seconds from fork to exit, peak RSS in KiB); kills the group after ``timeout``."""
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.popen.wait()
            raise BenchError(f"{shlex.join(self.argv)} killed after {timeout:g} s") from None
        try:
            seconds, maxrss = self._result.read_text().split()
        except (OSError, ValueError) as exc:
            raise BenchError(f"{shlex.join(self.argv)}: the spawn helper reported nothing (exit {rc})") from exc
        finally:
            for p in (self._result, Path(f"{self._result}.pid")):
                p.unlink(missing_ok=True)
        return rc, float(seconds), int(maxrss)


def run_proc(argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float) -> Proc:
    """Run ``argv`` to completion: wall time from fork to exit, peak RSS (``wait4`` in the helper).

    Output goes to files (a pipe nobody reads could fill and stall the tool).
    """
    out_path, err_path = cwd / "stdout.log", cwd / "stderr.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        rc, seconds, maxrss = Spawned(argv, env=env, cwd=cwd, stdout=out, stderr=err).wait(timeout)
    return Proc(
        argv=tuple(argv),
        seconds=seconds,
        peak_rss_kib=maxrss,  # KiB on Linux: the tool or its largest waited-for descendant
        returncode=rc,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


# --- data ---------------------------------------------------------------------------------------


class Corpus:
    """Files generated once (random bytes) and hard-linked into each run's fresh folder."""

    def __init__(self, root: Path, count: int, large_mib: int) -> None:
        self.root = root
        self.small = root / "small"
        self.small.mkdir(parents=True)
        self.count = count
        self.names = [f"B{i:05d}_BENCH_64x64.jpg" for i in range(count)]
        self.sha: dict[str, str] = {}
        old = time.time() - 86400  # older than any object written later: mtime-based syncs see "up to date"
        for name in self.names:
            data = os.urandom(FILE_SIZE)
            path = self.small / name
            path.write_bytes(data)
            os.utime(path, (old, old))
            self.sha[name] = hashlib.sha256(data).hexdigest()
        self.large_name = "B00001_LARGE_64x64.jpg"
        self.large = root / "large" / self.large_name
        self.large.parent.mkdir()
        digest = hashlib.sha256()
        with open(self.large, "wb") as f:
            for _ in range(large_mib):
                chunk = os.urandom(MIB)
                digest.update(chunk)
                f.write(chunk)
        os.utime(self.large, (old, old))
        self.large_sha = digest.hexdigest()
        self.large_size = large_mib * MIB

    def link_small(self, dest: Path, n: int) -> list[str]:
        """Hard-link the first ``n`` small files into the new folder ``dest``; return their names."""
        dest.mkdir(parents=True)
        names = self.names[:n]
        for name in names:
            os.link(self.small / name, dest / name)
        return names

    def layout_key(self, name: str) -> str:
        """The key s3sync's default template gives ``name``: ``CATEGORY/FOLDER/NAME`` (one folder per resource)."""
        from s3sync.resource import Resource
        from s3sync.settings import Settings

        return Resource(name, settings=Settings(_env_file=None, bucket_name="bench")).key

    def link_layout(self, dest: Path, n: int) -> dict[str, str]:
        """The first ``n`` small files as a tree of their layout keys under ``dest`` (for the peers); name -> key."""
        keys = {name: self.layout_key(name) for name in self.names[:n]}
        for name, key in keys.items():
            path = dest / key
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(self.small / name, path)
        return keys

    def link_large(self, dest: Path) -> None:
        dest.mkdir(parents=True)
        os.link(self.large, dest / self.large_name)


# --- bucket helpers -----------------------------------------------------------------------------


def list_objects(client: S3Client, bucket: str) -> dict[str, int]:
    """Every key of ``bucket`` with its size."""
    keys: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            keys[obj["Key"]] = obj["Size"]
    return keys


def drop_bucket(server: RcloneServer, client: S3Client, bucket: str) -> None:
    """Delete a bucket and its objects (keeps the server's disk small); untimed, best effort."""
    try:
        keys = list(list_objects(client, bucket))
        for i in range(0, len(keys), 1000):
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            )
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        log(f"could not delete bucket {bucket} through the API ({exc}); removing its folder")
        shutil.rmtree(server.data_dir / bucket, ignore_errors=True)


def fill_bucket(
    client: S3Client, bucket: str, folder: Path, names: Iterable[str], keys: dict[str, str] | None = None
) -> None:
    """Untimed preparation: put files into a bucket with boto3 (16 threads), at ``keys[name]`` or their names."""

    def put(name: str) -> None:
        with open(folder / name, "rb") as f:
            client.put_object(Bucket=bucket, Key=(keys or {}).get(name, name), Body=f)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, names))


def server_snapshot(server: RcloneServer, bucket: str) -> dict[str, tuple[int, int, int]]:
    """(inode, ctime, size) of every object file on the server's disk: a rewrite changes them."""
    root = server.data_dir / bucket
    snap: dict[str, tuple[int, int, int]] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            snap[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_ctime_ns, st.st_size)
    return snap


def check_bucket(client: S3Client, bucket: str, expected: dict[str, int]) -> None:
    """The bucket holds exactly the expected keys and sizes."""
    got = list_objects(client, bucket)
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])[:5]
        raise BenchError(
            f"bucket {bucket}: {len(got)} objects, expected {len(expected)} "
            f"(missing e.g. {missing}, unexpected e.g. {extra}, wrong size e.g. {wrong})"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def check_folder(folder: Path, expected_sha: dict[str, str]) -> None:
    """The folder holds exactly the expected files (relative paths) with the expected content."""
    got: dict[str, Path] = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            got[str(path.relative_to(folder))] = path
    if set(got) != set(expected_sha):
        missing = sorted(set(expected_sha) - set(got))[:5]
        extra = sorted(set(got) - set(expected_sha))[:5]
        raise BenchError(
            f"folder {folder}: {len(got)} files, expected {len(expected_sha)} "
            f"(missing e.g. {missing}, unexpected e.g. {extra})"
        )
    bad = [rel for rel, path in got.items() if _sha256(path) != expected_sha[rel]]
    if bad:
        raise BenchError(f"folder {folder}: {len(bad)} files with wrong content, e.g. {bad[:5]}")


# --- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Cell:
    """One tool in one scenario table."""

    tool: str
    times: list[float] = dataclasses.field(default_factory=list)
    rss_kib: list[int] = dataclasses.field(default_factory=list)
    status: str = "ok"  # ok | not installed | FAILED: ...
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and self.status == "ok" else None


@dataclasses.dataclass(slots=True)
class DaemonResult:
    """The daemon scenario over all rounds."""

    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    idle_rss_mib: list[float] = dataclasses.field(default_factory=list)
    peak_rss_mib: list[float] = dataclasses.field(default_factory=list)
    ready_s: list[float] = dataclasses.field(default_factory=list)
    status: str = "ok"


# --- the benchmark ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    files: int
    noop_files: int
    large_mib: int
    daemon_files: int
    scenarios: tuple[str, ...]
    tools: tuple[str, ...]
    out: Path
    timeout: float
    warmup: bool = True


class Bench:
    """Owns the server, the corpus and the results of one benchmark run."""

    def __init__(self, opts: Options, tools: dict[str, Tool], server: RcloneServer, work: Path) -> None:
        self.opts = opts
        self.tools = tools
        self.server = server
        self.work = work
        self.env = base_env(server)
        self.client: S3Client = server.client(max_pool_connections=16)
        need_small = max(
            opts.files if {"upload", "mirror", "upload-layout", "mirror-layout"} & set(opts.scenarios) else 0,
            opts.noop_files if "noop" in opts.scenarios else 0,
            1,
        )
        log(f"generating {need_small} x 64 KiB files and one {opts.large_mib} MiB file")
        self.corpus = Corpus(work / "corpus", need_small, opts.large_mib if "large" in opts.scenarios else 0)
        self.results: dict[str, dict[str, Cell]] = {}
        self.daemon = DaemonResult()
        self._seq = 0
        self._warming = False

    # --- plumbing ----------------------------------------------------------------------------
    def _fresh(self, scenario: str, tool: str, rnd: int) -> tuple[str, Path]:
        """A new bucket and a new run folder."""
        self._seq += 1
        bucket = f"{scenario}-{tool}-r{rnd}-{self._seq}".lower()
        self.server.create_bucket(bucket)
        run_dir = self.work / "runs" / f"{self._seq:04d}-{scenario}-{tool}"
        run_dir.mkdir(parents=True)
        return bucket, run_dir

    def _cleanup(self, bucket: str, run_dir: Path) -> None:
        drop_bucket(self.server, self.client, bucket)
        shutil.rmtree(run_dir, ignore_errors=True)

    def _run(self, tool: str, args: Sequence[str], run_dir: Path, env: dict[str, str] | None = None) -> Proc:
        argv = [*self.tools[tool].argv0, *args]
        proc = run_proc(argv, env=env or self.env, cwd=run_dir, timeout=self.opts.timeout)
        if proc.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} exited with {proc.returncode}:\n{proc.tail()}")
        return proc

    def _upload_args(self, tool: str, src: Path, bucket: str) -> list[str]:
        ep = self.server.endpoint
        return {
            "s3sync": ["sync", "--upload-only"],
            "aws": ["s3", "sync", str(src), f"s3://{bucket}/", "--endpoint-url", ep, "--no-progress"],
            "s5cmd": ["--endpoint-url", ep, "cp", f"{src}/*", f"s3://{bucket}/"],
            "rclone": ["copy", str(src), f"bench:{bucket}"],
        }[tool]

    def _download_args(self, tool: str, bucket: str, dst: Path) -> list[str]:
        ep = self.server.endpoint
        return {
            "s3sync": ["sync", "--mirror-only"],
            "aws": ["s3", "sync", f"s3://{bucket}/", str(dst), "--endpoint-url", ep, "--no-progress"],
            "s5cmd": ["--endpoint-url", ep, "cp", f"s3://{bucket}/*", f"{dst}/"],
            "rclone": ["copy", f"bench:{bucket}", str(dst)],
        }[tool]

    def _noop_args(self, tool: str, src: Path, bucket: str) -> list[str]:
        if tool == "s5cmd":
            return ["--endpoint-url", self.server.endpoint, "sync", f"{src}/", f"s3://{bucket}/"]
        return self._upload_args(tool, src, bucket)

    def _env_for(
        self, tool: str, bucket: str, run_dir: Path, *, upload: Path, local: Path, state: str
    ) -> dict[str, str]:
        if tool != "s3sync":
            return self.env
        return s3sync_env(
            self.env, self.server, bucket, upload=upload, local=local, state=run_dir / f"state-{state}.db"
        )

    def _record(self, scenario: str, tool: str, proc: Proc, rnd: int) -> None:
        if self._warming:
            log(f"{scenario:<10} warm-up {tool:<7} {proc.seconds:8.2f} s  (untimed)")
            return
        cell = self.results[scenario][tool]
        cell.times.append(proc.seconds)
        cell.rss_kib.append(proc.peak_rss_kib)
        log(
            f"{scenario:<10} round {rnd + 1}/{self.opts.rounds} {tool:<7} "
            f"{proc.seconds:8.2f} s  {proc.peak_rss_kib / 1024:7.1f} MiB"
        )

    def _cells(self, scenario: str) -> dict[str, Cell]:
        return self.results.setdefault(scenario, {t: Cell(t) for t in self.tools})

    # --- scenarios -----------------------------------------------------------------------------
    def upload(self, tool: str, rnd: int) -> None:
        bucket, run_dir = self._fresh("upload", tool, rnd)
        try:
            src = run_dir / "src"
            names = self.corpus.link_small(src, self.opts.files)
            env = self._env_for(tool, bucket, run_dir, upload=src, local=run_dir / "mirror", state="a")
            proc = self._run(tool, self._upload_args(tool, src, bucket), run_dir, env)
            if tool == "s3sync" and f"uploaded {len(names)} " not in proc.stderr:
                raise BenchError(f"s3sync summary does not say 'uploaded {len(names)}': {proc.stderr[-500:]}")
            check_bucket(self.client, bucket, dict.fromkeys(names, FILE_SIZE))
            self._record("upload", tool, proc, rnd)
        finally:
            self._cleanup(bucket, run_dir)

    def mirror(self, tool: str, rnd: int, *, layout: bool = False) -> None:
        """A bucket of small objects -> an empty folder; ``layout``: keys in the real layout
        (CATEGORY/FOLDER/NAME, one folder per resource) instead of bare names."""
        scenario = "mirror-layout" if layout else "mirror"
        bucket, run_dir = self._fresh(scenario, tool, rnd)
        try:
            names = self.corpus.names[: self.opts.files]
            keys = {n: self.corpus.layout_key(n) if layout else n for n in names}
            fill_bucket(self.client, bucket, self.corpus.small, names, keys)
            dst = run_dir / "dst"
            dst.mkdir()
            up = run_dir / "up"
            up.mkdir()
            env = self._env_for(tool, bucket, run_dir, upload=up, local=dst, state="a")
            proc = self._run(tool, self._download_args(tool, bucket, dst), run_dir, env)
            check_folder(dst, {keys[n]: self.corpus.sha[n] for n in names})
            self._record(scenario, tool, proc, rnd)
        finally:
            self._cleanup(bucket, run_dir)

    def upload_layout(self, tool: str, rnd: int) -> None:
        """The bucket's real layout: s3sync derives CATEGORY/FOLDER/NAME from each dropped name (the
        default template); the peers copy a folder tree already laid out that way, 2,000 folders."""
        bucket, run_dir = self._fresh("upload-layout", tool, rnd)
        try:
            src = run_dir / "src"
            if tool == "s3sync":
                names = self.corpus.link_small(src, self.opts.files)
                keys = {n: self.corpus.layout_key(n) for n in names}
            else:
                src.mkdir(parents=True)
                keys = self.corpus.link_layout(src, self.opts.files)
            env = self._env_for(tool, bucket, run_dir, upload=src, local=run_dir / "mirror", state="a")
            if tool == "s3sync":
                env = {k: v for k, v in env.items() if k != "S3_KEY_TEMPLATE"}
            proc = self._run(tool, self._upload_args(tool, src, bucket), run_dir, env)
            check_bucket(self.client, bucket, dict.fromkeys(keys.values(), FILE_SIZE))
            self._record("upload-layout", tool, proc, rnd)
        finally:
            self._cleanup(bucket, run_dir)

    def noop(self, tool: str, rnd: int) -> None:
        bucket, run_dir = self._fresh("noop", tool, rnd)
        try:
            src = run_dir / "src"
            names = self.corpus.link_small(src, self.opts.noop_files)
            env = self._env_for(tool, bucket, run_dir, upload=src, local=run_dir / "mirror", state="a")
            args = self._noop_args(tool, src, bucket)
            # Untimed: the tool's own first sync brings bucket *and* its own state in step.
            self._run(tool, args, run_dir, env)
            expected = dict.fromkeys(names, FILE_SIZE)
            check_bucket(self.client, bucket, expected)
            before = server_snapshot(self.server, bucket)
            proc = self._run(tool, args, run_dir, env)
            check_bucket(self.client, bucket, expected)
            after = server_snapshot(self.server, bucket)
            rewritten = sorted(k for k in before if after.get(k) != before[k])
            if rewritten:
                raise BenchError(f"no-op re-sync rewrote {len(rewritten)} objects, e.g. {rewritten[:3]}")
            if tool == "s3sync" and "uploaded 0 " not in proc.stderr:
                raise BenchError(f"s3sync summary does not say 'uploaded 0': {proc.stderr[-500:]}")
            self._record("noop", tool, proc, rnd)
        finally:
            self._cleanup(bucket, run_dir)

    def large(self, tool: str, rnd: int) -> None:
        bucket, run_dir = self._fresh("large", tool, rnd)
        try:
            src = run_dir / "src"
            self.corpus.link_large(src)
            env = self._env_for(tool, bucket, run_dir, upload=src, local=run_dir / "unused", state="up")
            proc = self._run(tool, self._upload_args(tool, src, bucket), run_dir, env)
            check_bucket(self.client, bucket, {self.corpus.large_name: self.corpus.large_size})
            self._record("large-up", tool, proc, rnd)
            # Down: the object this tool just uploaded, into an empty folder, with fresh s3sync state.
            dst = run_dir / "dst"
            dst.mkdir()
            up = run_dir / "up"
            up.mkdir()
            env = self._env_for(tool, bucket, run_dir, upload=up, local=dst, state="down")
            proc = self._run(tool, self._download_args(tool, bucket, dst), run_dir, env)
            check_folder(dst, {self.corpus.large_name: self.corpus.large_sha})
            self._record("large-down", tool, proc, rnd)
        finally:
            self._cleanup(bucket, run_dir)

    def daemon_round(self, rnd: int) -> None:
        """``s3sync run``: files renamed into the watched folder, polled with HEAD until readable."""
        bucket, run_dir = self._fresh("daemon", "s3sync", rnd)
        up, staging, local = run_dir / "up", run_dir / "staging", run_dir / "mirror"
        for d in (up, staging, local):
            d.mkdir()
        env = self._env_for("s3sync", bucket, run_dir, upload=up, local=local, state="d")
        env.update(S3_LOG_FORMAT="json", S3_LOG_LEVEL="info", S3_MIRROR_INTERVAL="0")
        argv = [*self.tools["s3sync"].argv0, "run"]
        start = time.perf_counter()
        spawned = Spawned(argv, env=env, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = spawned.popen
        assert proc.stderr is not None
        drain = _LogDrain(proc.stderr, run_dir / "daemon.log")
        drain.start()
        try:
            _wait_ready(drain, proc, timeout=30)
            ready_s = time.perf_counter() - start
            pid = spawned.child_pid()
            latencies: list[float] = []
            for i in range(self.opts.daemon_files):
                name = f"B{i:05d}_DAEMON_64x64.jpg"
                (staging / name).write_bytes(os.urandom(FILE_SIZE))
                t0 = time.perf_counter()
                os.replace(staging / name, up / name)
                latencies.append(self._await_object(bucket, name, t0, proc, drain) * 1000)
            time.sleep(2.0)  # idle
            idle_mib = _vm_rss_kib(pid) / 1024
            expected = {f"B{i:05d}_DAEMON_64x64.jpg": FILE_SIZE for i in range(self.opts.daemon_files)}
            check_bucket(self.client, bucket, expected)
        except BaseException:
            spawned.kill()
            with contextlib.suppress(BenchError):
                spawned.wait(10)
            drain.join(5)
            self._cleanup(bucket, run_dir)
            raise
        spawned.terminate()  # a clean stop; wait4 in the helper gives the whole run's peak RSS
        rc, _, peak_kib = spawned.wait(60)
        drain.join(5)
        self._cleanup(bucket, run_dir)
        if rc != 0:
            raise BenchError(f"s3sync run exited with {rc} after SIGTERM:\n{drain.tail()}")
        self.daemon.latencies_ms.extend(latencies)
        self.daemon.idle_rss_mib.append(idle_mib)
        self.daemon.peak_rss_mib.append(peak_kib / 1024)
        self.daemon.ready_s.append(ready_s)
        p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
        log(
            f"daemon     round {rnd + 1}/{self.opts.rounds} s3sync  p50 {p50:.0f} ms  p99 {p99:.0f} ms  "
            f"idle RSS {idle_mib:.1f} MiB  peak RSS {peak_kib / 1024:.1f} MiB"
        )

    def _await_object(self, bucket: str, key: str, t0: float, proc: subprocess.Popen[bytes], drain: _LogDrain) -> float:
        deadline = t0 + 30
        while True:
            try:
                self.client.head_object(Bucket=bucket, Key=key)
                return time.perf_counter() - t0
            except ClientError:
                pass
            if proc.poll() is not None:
                raise BenchError(f"s3sync run exited with {proc.returncode}:\n{drain.tail()}")
            if time.perf_counter() > deadline:
                raise BenchError(f"{key} not readable 30 s after it was renamed into the folder:\n{drain.tail()}")
            time.sleep(0.002)

    # --- driver --------------------------------------------------------------------------------
    def run(self) -> bool:
        """Every scenario, every round, every tool in rotating order; False if anything failed."""
        ok = True
        order = [t for t in TOOLS if t in self.tools]
        steps: dict[str, Callable[[str, int], None]] = {
            "upload": self.upload,
            "mirror": self.mirror,
            "upload-layout": self.upload_layout,
            "mirror-layout": functools.partial(self.mirror, layout=True),
            "noop": self.noop,
            "large": self.large,
        }
        for scenario in self.opts.scenarios:
            if scenario == "daemon":
                ok &= self._run_daemon()
                continue
            tables = ("large-up", "large-down") if scenario == "large" else (scenario,)
            for table in tables:
                cells = self._cells(table)
                for t in order:
                    if not self.tools[t].installed:
                        cells[t].status = "not installed"
            if self.opts.warmup:
                self._warm_up(scenario, steps[scenario], order)
            for rnd in range(self.opts.rounds):
                k = rnd % len(order)
                for tool in order[k:] + order[:k]:
                    if not self.tools[tool].installed or any(self.results[tb][tool].status != "ok" for tb in tables):
                        continue
                    try:
                        steps[scenario](tool, rnd)
                    except (BenchError, OSError, ClientError) as exc:
                        ok = False
                        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        for tb in tables:
                            if len(self.results[tb][tool].times) <= rnd:
                                self.results[tb][tool].status = f"FAILED: {first_line[:200]}"
                        log(f"!!! {scenario} round {rnd + 1} {tool} FAILED: {exc}")
        return ok

    def _warm_up(self, scenario: str, step: Callable[[str, int], None], order: list[str]) -> None:
        """One untimed run of ``scenario`` by the last installed tool of round 1; a failure only logs.

        Without it the first timed run of the first scenario met an idle machine: it was the
        fastest run of its tool in every benchmark so far, whichever tool it was.
        """
        installed = [t for t in order if self.tools[t].installed]
        if not installed:
            return
        self._warming = True
        try:
            step(installed[-1], 0)
        except (BenchError, OSError, ClientError) as exc:
            log(f"!!! {scenario} warm-up {installed[-1]} failed (untimed, ignored): {exc}")
        finally:
            self._warming = False

    def _run_daemon(self) -> bool:
        if "s3sync" not in self.tools:
            return True
        for rnd in range(self.opts.rounds):
            try:
                self.daemon_round(rnd)
            except (BenchError, OSError, ClientError) as exc:
                self.daemon.status = f"FAILED: {str(exc).splitlines()[0][:200]}"
                log(f"!!! daemon round {rnd + 1} FAILED: {exc}")
                return False
        return True


class _LogDrain(threading.Thread):
    """Reads the daemon's stderr to the end (the pipe never fills), notices ``daemon.ready``."""

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        super().__init__(name="daemon-log", daemon=True)
        self.stream = stream
        self.path = path
        self.ready = threading.Event()
        self.lines: deque[str] = deque(maxlen=200)

    def run(self) -> None:
        with open(self.path, "w") as out:
            for raw in self.stream:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                out.write(line + "\n")
                if not self.ready.is_set() and "daemon.ready" in line:
                    with contextlib.suppress(json.JSONDecodeError):
                        if json.loads(line).get("event") == "daemon.ready":
                            self.ready.set()

    def tail(self) -> str:
        return "\n".join(list(self.lines)[-30:])


def _wait_ready(drain: _LogDrain, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for the daemon's ``daemon.ready`` event (bounded; fails early if the daemon exits)."""
    deadline = time.monotonic() + timeout
    while not drain.ready.wait(0.05):
        if proc.poll() is not None:
            raise BenchError(f"s3sync run exited with {proc.returncode} before daemon.ready:\n{drain.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"s3sync run did not log daemon.ready within {timeout:g} s:\n{drain.tail()}")


def _vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the second largest)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


# --- the report ---------------------------------------------------------------------------------


def report_head(title: str, command: str, started: dt.datetime, elapsed: float, mach: dict[str, str]) -> list[str]:
    """The first lines of a report: title, command, date and duration, the machine."""
    return [
        f"# {title}",
        "",
        f"Command: `{command}` (from the repository root)",
        "",
        f"Date: {started.strftime('%Y-%m-%d %H:%M %Z')}; the whole run took {elapsed / 60:.1f} min.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in mach.items()),
        "",
    ]


def machine() -> dict[str, str]:
    mem = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _fmt_s(x: float) -> str:
    return f"{x:.2f}"


def scenario_table(cells: dict[str, Cell]) -> list[str]:
    peer_medians = [m for t, c in cells.items() if t in PEERS and (m := c.median) is not None]
    fastest = min(peer_medians) if peer_medians else None
    rows = [
        "| tool | median s | runs (s) | peak RSS MiB | ratio to fastest peer |",
        "|---|---:|---|---:|---:|",
    ]
    for tool in TOOLS:
        cell = cells.get(tool)
        if cell is None:
            continue
        if cell.status != "ok":
            rows.append(f"| {tool} | {cell.status} | {', '.join(map(_fmt_s, cell.times))} | | |")
            continue
        median = cell.median
        assert median is not None
        ratio = f"{median / fastest:.2f}x" if fastest else "n/a"
        if fastest is not None and median == fastest:
            ratio += " (fastest peer)"
        rss = max(cell.rss_kib) / 1024
        rows.append(f"| {tool} | {median:.2f} | {', '.join(map(_fmt_s, cell.times))} | {rss:.0f} | {ratio} |")
    return rows


def daemon_table(d: DaemonResult, n_files: int, rounds: int) -> list[str]:
    rows = [
        f"{n_files} files of 64 KiB, one at a time, renamed into the watched folder; latency = rename until a "
        f"HEAD sees the object ({len(d.latencies_ms)} samples over {rounds} round(s)).",
        "",
        "| measure | value | target | result |",
        "|---|---:|---:|---|",
    ]
    if d.status != "ok" and not d.latencies_ms:
        return [*rows, f"| daemon | {d.status} | | FAIL |"]
    p50, p99 = _percentile(d.latencies_ms, 50), _percentile(d.latencies_ms, 99)
    idle = max(d.idle_rss_mib) if d.idle_rss_mib else float("nan")

    def verdict(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    rows += [
        f"| latency p50 | {p50:.0f} ms | < {TARGET_P50_MS:.0f} ms | {verdict(p50 < TARGET_P50_MS)} |",
        f"| latency p99 | {p99:.0f} ms | < {TARGET_P99_MS:.0f} ms | {verdict(p99 < TARGET_P99_MS)} |",
        f"| latency max | {max(d.latencies_ms):.0f} ms | | |",
        f"| idle RSS (VmRSS, 2 s idle after the last file; worst round) | {idle:.1f} MiB "
        f"| < {TARGET_IDLE_RSS_MIB:.0f} MiB | {verdict(idle < TARGET_IDLE_RSS_MIB)} |",
    ]
    if d.peak_rss_mib:
        rows.append(f"| peak RSS (wait4) | {max(d.peak_rss_mib):.1f} MiB | | |")
    if d.ready_s:
        rows.append(f"| start-up to daemon.ready | {statistics.median(d.ready_s):.2f} s | | |")
    if d.status != "ok":
        rows.append(f"| status | {d.status} | | FAIL |")
    return rows


_TITLES = {
    "upload": "upload: {files} files of 64 KiB, folder -> empty bucket",
    "mirror": "mirror: bucket of {files} objects of 64 KiB -> empty folder",
    "upload-layout": "upload-layout: {files} files of 64 KiB -> keys CATEGORY/FOLDER/NAME (one folder each)",
    "mirror-layout": "mirror-layout: bucket of {files} objects in CATEGORY/FOLDER/NAME -> empty folder tree",
    "noop": "noop: re-sync of {noop} files already in step (upload direction)",
    "large-up": "large-up: one {large} MiB file, folder -> empty bucket (multipart)",
    "large-down": "large-down: the same {large} MiB object -> empty folder",
}

_COMMANDS = {
    "upload": [
        "s3sync: `s3sync sync --upload-only` (S3_KEY_TEMPLATE={name}: keys are the bare file names)",
        "aws: `aws s3 sync DIR s3://BUCKET/ --no-progress`",
        "s5cmd: `s5cmd cp 'DIR/*' s3://BUCKET/`",
        "rclone: `rclone copy DIR bench:BUCKET`",
    ],
    "mirror": [
        "s3sync: `s3sync sync --mirror-only`",
        "aws: `aws s3 sync s3://BUCKET/ DIR --no-progress`",
        "s5cmd: `s5cmd cp 's3://BUCKET/*' DIR/`",
        "rclone: `rclone copy bench:BUCKET DIR`",
    ],
    "upload-layout": [
        "s3sync: `s3sync sync --upload-only` from a flat drop folder, default S3_KEY_TEMPLATE "
        "({category}/{folder}/{name}): each name gives its key",
        "peers: the upload commands above on a folder tree already laid out as CATEGORY/FOLDER/NAME",
    ],
    "mirror-layout": ["the mirror commands above; every tool recreates the tree of 2,000 folders"],
    "noop": [
        "each tool first syncs the folder itself (untimed), so the bucket and its own state are in step; "
        "local mtimes are a day old",
        "timed: the same command again: `s3sync sync --upload-only`, `aws s3 sync DIR s3://BUCKET/`, "
        "`s5cmd sync DIR/ s3://BUCKET/`, `rclone copy DIR bench:BUCKET`",
        "checked: object count unchanged, no object file rewritten on the server (inode/ctime), "
        "s3sync's summary says `uploaded 0`",
    ],
    "large-up": ["the upload commands above, with the one file in DIR"],
    "large-down": ["the mirror commands above, from the bucket the same tool just filled"],
}


def render(
    opts: Options,
    tools: dict[str, Tool],
    results: dict[str, dict[str, Cell]],
    daemon: DaemonResult,
    command: str,
    started: dt.datetime,
    elapsed: float,
    mach: dict[str, str],
    server_version: str,
) -> tuple[str, str]:
    """(the whole BENCHMARKS.md, the tables alone for stdout)."""
    head = [
        *report_head("Benchmarks: s3sync against aws-cli, s5cmd and rclone", command, started, elapsed, mach),
        "## Tools",
        "",
        *(f"- {t.name}: {t.version}" for t in tools.values()),
        *(f"- {k} (used by s3sync): {v}" for k, v in library_versions().items()),
        f"- server: `{server_version}` `serve s3` on 127.0.0.1, `--vfs-cache-mode off`, one process for the whole run",
        "",
        f"Rounds: {opts.rounds}; tool order rotates each round; "
        + (
            "before each scenario one untimed warm-up run (the tool that runs last in round 1), so no timed run "
            "meets an idle machine; "
            if opts.warmup
            else "no warm-up run; "
        )
        + "every timed run gets a fresh bucket and fresh folders. Each tool runs with its defaults "
        "(aws-cli 10 concurrent requests, s5cmd 256 workers, rclone 4 transfers / 8 checkers, "
        "s3sync S3_MAX_CONCURRENCY=8). Peak RSS is `wait4`'s ru_maxrss, taken by a small spawn helper "
        "(so it is not inflated by the benchmark's own memory; ~5 MiB floor): the largest single process "
        "of the tool's tree, the highest over the rounds.",
        "",
    ]
    tables: list[str] = []
    fmt = {"files": f"{opts.files:,}", "noop": f"{opts.noop_files:,}", "large": str(opts.large_mib)}
    for name in ("upload", "mirror", "upload-layout", "mirror-layout", "noop", "large-up", "large-down"):
        if name not in results:
            continue
        tables += [f"## {_TITLES[name].format(**fmt)}", "", *(f"- {c}" for c in _COMMANDS[name]), ""]
        tables += [*scenario_table(results[name]), ""]
    if "daemon" in opts.scenarios and "s3sync" in tools:
        tables += [
            "## daemon: `s3sync run` (s3sync only)",
            "",
            "S3_SETTLE_SECONDS default (a renamed-in file counts as complete at once), S3_MIRROR_INTERVAL=0, "
            "S3_LOG_FORMAT=json, S3_LOG_LEVEL=info.",
            "",
            *daemon_table(daemon, opts.daemon_files, opts.rounds),
            "",
        ]
    if len(results) > 1:
        tables += ["## Summary: median time as a ratio to the fastest peer", ""]
        names = [
            n
            for n in ("upload", "mirror", "upload-layout", "mirror-layout", "noop", "large-up", "large-down")
            if n in results
        ]
        tables += ["| tool | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for tool in TOOLS:
            if tool not in tools:
                continue
            row = []
            for n in names:
                cells = results[n]
                peers = [m for t, c in cells.items() if t in PEERS and (m := c.median) is not None]
                m = cells[tool].median
                row.append(f"{m / min(peers):.2f}x" if m is not None and peers else cells[tool].status)
            tables.append(f"| {tool} | " + " | ".join(row) + " |")
        tables.append("")
    note = [
        "## How to read this",
        "",
        "- Absolute times depend on this machine and on whatever else it was doing (it was shared); the "
        "ratios are the result. Every tool hit the same local rclone server in the same run, in rotating "
        "order, so the server's and the machine's costs are shared alike.",
        "- The server is `rclone serve s3` on loopback: no network latency, so per-request overhead and "
        "client CPU dominate; against a remote S3 the concurrency of each tool matters more.",
        "- Every timed run was checked afterwards (object count and sizes in the bucket, file count and "
        "SHA-256 of every downloaded file); a failed check shows as FAILED instead of a time.",
        "- s3sync does more per file than the peers: it validates each name, records every transfer in "
        "its SQLite state and checks content end to end (Content-MD5 on every PUT, SHA-256 in the object's "
        "metadata, a hash check after each download). Its Python start-up (imports) is part of every time; "
        "its modules are byte-compiled once before the first run, as a pip install does.",
        "",
    ]
    return "\n".join([*head, *tables, *note]), "\n".join(tables)


# --- entry point --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, default=2000, help="files of the upload and mirror scenarios")
    p.add_argument("--noop-files", type=int, default=10000)
    p.add_argument("--large-mib", type=int, default=512)
    p.add_argument("--daemon-files", type=int, default=200)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma list of {', '.join(TOOLS)}")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run is killed")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round: does everything work?")
    p.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up run before each scenario"
    )
    a = p.parse_args(argv)
    scenarios = tuple(s.strip() for s in a.scenarios.split(",") if s.strip())
    tools = tuple(t.strip() for t in a.tools.split(",") if t.strip())
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    for t in tools:
        if t not in TOOLS:
            p.error(f"unknown tool {t!r} (known: {', '.join(TOOLS)})")
    if a.smoke:
        a.rounds, a.files, a.noop_files, a.large_mib, a.daemon_files, a.timeout = 1, 20, 50, 6, 10, 120.0
    if min(a.rounds, a.files, a.noop_files, a.large_mib, a.daemon_files) < 1:
        p.error("counts and sizes must be at least 1")
    if max(a.files, a.noop_files) > 99999:
        p.error("at most 99999 files (5-digit serials)")
    return Options(
        rounds=a.rounds,
        files=a.files,
        noop_files=a.noop_files,
        large_mib=a.large_mib,
        daemon_files=a.daemon_files,
        scenarios=scenarios,
        tools=tools,
        out=a.out.resolve(),
        timeout=a.timeout,
        warmup=a.warmup,
    )


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="s3sync-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = dt.datetime.now(dt.UTC).astimezone()
    t0 = time.monotonic()
    mach = machine()
    tools = find_tools(opts.tools)
    for t in tools.values():
        log(f"{t.name}: {t.version}" + (f" ({t.argv0[0]})" if t.installed else ""))
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile())
    _byte_compile_s3sync()
    with _workdir() as work, RcloneServer(workdir=work / "server") as server:
        server_version = _first_line([server.binary, "version"])
        log(f"server: {server_version} at {server.endpoint}; work folder {work}")
        bench = Bench(opts, tools, server, work)
        ok = bench.run()
        bench.client.close()
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    doc, tables = render(
        opts, tools, bench.results, bench.daemon, command, started, time.monotonic() - t0, mach, server_version
    )
    opts.out.write_text(doc + "\n")
    print(tables)
    log(f"wrote {opts.out}" + ("" if ok else "; SOME RUNS FAILED (see above)"))
    return 0 if ok else 1


def _byte_compile_s3sync() -> None:
    """Compile s3sync's modules once, as pip does when it installs a wheel.

    An editable install in an environment with ``PYTHONDONTWRITEBYTECODE=1`` (as on CI
    machines) would otherwise compile every module at every start, about 0.1 s per run that an
    installed s3sync never pays. aws-cli, the other Python tool, comes byte-compiled from pip.
    """
    import compileall

    compileall.compile_dir(REPO / "s3sync", quiet=1)


def _nofile() -> tuple[int, int]:
    """Raise the open-file limit to its hard maximum: s5cmd's 256 workers open many files at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    return (max(soft, min(target, 65536)), hard)


if __name__ == "__main__":
    sys.exit(main())
