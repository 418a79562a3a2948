"""The ``s3sync`` command (Typer + Rich): argv -> Settings -> logs -> library/service.

Exit codes: 0 ok, 1 some item failed, 2 usage or configuration error. Errors are one line
on stderr (``s3sync: error: ...``), or one event in a running daemon's log; ``--debug`` adds
the traceback.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import structlog
import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from s3sync._version import __version__
from s3sync.errors import ConfigurationError, InvalidNameError, S3SyncError
from s3sync.lock import StateLock
from s3sync.logs import configure_logging
from s3sync.outcomes import Subscriber
from s3sync.settings import Settings, default_data_dir, load_settings, resolve_folders

__all__ = ["Host", "app", "main"]

app = typer.Typer(
    name="s3sync",
    help="Keep a folder of graphics resources and an S3 bucket in step.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
log = structlog.get_logger("s3sync")


class _Ctx:
    env_file: str | None = ".env"
    debug: bool = False
    #: ``run --env-file``: the file wins over the environment, and is re-read at each reload.
    file_wins: bool = False
    #: Set while ``run`` has a daemon going: its errors are events in its log, not a CLI line.
    daemon: bool = False
    #: The name the command was called by (``manage.py s3sync`` from Django), for hints.
    prog: str = "s3sync"
    #: What the program running this command line in-process handed it (see :class:`Host`).
    host: Host


@dataclass(frozen=True)
class Host:
    """What a program that runs this command line in-process hands it (click's ``obj``).

    ``manage.py s3sync`` passes the Django signals as a subscriber: ``run`` and ``sync`` tell it
    every file's outcome (:mod:`s3sync.outcomes`).
    """

    subscribers: tuple[Subscriber, ...] = ()


_ctx = _Ctx()
_ctx.host = Host()


def _host() -> Host:
    return _ctx.host


def _with_prog(message: str) -> str:
    """Hints name the command as the user typed it (``manage.py s3sync config``, not ``s3sync config``)."""
    prog = _ctx.prog
    if not prog or prog == "s3sync":
        return message
    return message.replace("`s3sync ", f"`{prog} ")


def _fail(exc: BaseException) -> NoReturn:
    """One line for one error, exit code from the error's class.

    A one-shot command prints ``s3sync: error: ...``; a running daemon logs one event instead
    (``command.failed`` / ``command.crashed``), since its stderr is its log (journald, JSON).
    """
    if isinstance(exc, S3SyncError):
        code, event = exc.exit_code, "command.failed"
        message = _with_prog(str(exc))
    else:
        code, event = 1, "command.crashed"
        message = f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    if _ctx.debug:
        traceback.print_exception(exc, file=sys.stderr)
    if _ctx.daemon:
        log.error(event, error=message, error_type=type(exc).__name__)
    else:
        err.print(f"s3sync: error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("s3sync: interrupted", markup=False)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - turned into one line and an exit code
        _fail(exc)


def _load(**overrides: Any) -> Settings:
    """The settings as given (no logging set up, symlinked folders not resolved)."""
    return load_settings(_ctx.env_file, file_wins=_ctx.file_wins, **overrides)


def _configure_logging(settings: Settings) -> None:
    secrets = [
        s.get_secret_value() for s in (settings.aws_access_key_id, settings.aws_secret_access_key) if s is not None
    ]
    configure_logging(settings.log_format, "debug" if _ctx.debug else settings.log_level, secrets=secrets)


def _settings(**overrides: Any) -> Settings:
    """The settings, logging configured by them, symlinked folders resolved (once, here)."""
    settings = _load(**overrides)
    _configure_logging(settings)
    return resolve_folders(settings)


def _started() -> None:
    """Tell the cyclic garbage collector that start-up is over: what exists now lives until exit.

    Start-up leaves a few hundred thousand objects behind (modules, pydantic's schemas, botocore's
    exception classes). Frozen, they are no longer walked by every full collection of a daemon
    that runs for months, nor by the collections of interpreter shutdown: 0.15-0.2 s of every
    ``s3sync sync`` on the benchmark machine. Their memory is not freed at exit; the OS does that.
    """
    gc.freeze()


def _version(value: bool) -> None:
    if value:
        out.print(f"s3sync {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    env_file: Annotated[
        str | None, typer.Option("--env-file", help="Read settings from this .env file (default: ./.env).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug events.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Keep a folder of graphics resources and an S3 bucket in step."""
    _ctx.env_file = env_file if env_file is not None else ".env"
    _ctx.debug = debug
    _ctx.file_wins = _ctx.daemon = False  # per invocation (manage.py runs several in one process)
    root = ctx.find_root()
    _ctx.prog = root.info_name or "s3sync"
    _ctx.host = root.obj if isinstance(root.obj, Host) else Host()
    configure_logging("auto", "warning")


# --- library commands ----------------------------------------------------------------------
@app.command()
def check(
    names: Annotated[list[str], typer.Argument(help="Resource names to parse.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Parse resource names and print their fields, or why a name is invalid."""
    from s3sync.resource import Resource

    with _errors():
        settings = _settings()
        results: list[dict[str, Any]] = []
        for name in names:
            try:
                results.append({"valid": True, **Resource(name, settings=settings).as_dict()})
            except InvalidNameError as exc:
                results.append({"valid": False, "name": name, "reason": exc.reason})
        if as_json:
            out.print(json.dumps(results, indent=2), markup=False, highlight=False)
        else:
            for r in results:
                if r["valid"]:
                    # Values fold onto more lines, never end in "…": the whole URL is what people copy.
                    table = Table(title=r["name"], show_header=False, title_justify="left")
                    table.add_column(no_wrap=True)
                    table.add_column(overflow="fold")
                    for field in ("code", "serial", "folder", "rest", "size", "extension", "category", "key", "url"):
                        value = r[field]
                        if field == "url" and value is None:
                            value = "(none: set S3_BUCKET_NAME, or S3_PUBLIC_BASE_URL for a CDN)"
                        table.add_row(field, str(value))
                    out.print(table)
                else:
                    out.print(f"[red]invalid[/red] {r['name']!r}: {r['reason']}", highlight=False)
        if not all(r["valid"] for r in results):
            raise typer.Exit(1)


@app.command("publish-check")
def publish_check(
    names: Annotated[list[str], typer.Argument(help="Resource names whose public URL to fetch.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Fetch each resource's public URL anonymously and say whether the world can read it (exit 1 if not)."""
    import ssl

    from s3sync.publish import check_public
    from s3sync.resource import Resource

    with _errors():
        settings = _settings()
        context = ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings.ca_bundle else None
        results: list[dict[str, Any]] = []
        for name in names:
            try:
                url = Resource(name, settings=settings).url
            except InvalidNameError as exc:
                results.append({"name": name, "public": False, "url": None, "status": None, "verdict": exc.reason})
                continue
            verdict = check_public(url, timeout=settings.read_timeout, context=context)
            results.append(
                {
                    "name": name,
                    "public": verdict.public,
                    "url": url,
                    "status": verdict.status,
                    "verdict": verdict.explain(),
                    "cache_control": verdict.cache_control,
                }
            )
        if as_json:
            out.print(json.dumps(results, indent=2), markup=False, highlight=False)
        else:
            for r in results:
                out.print(f"{r['name']}: {r['verdict']}", markup=False, highlight=False)
                if r["url"]:
                    out.print(f"  {r['url']}", markup=False, highlight=False, crop=False)  # never cut
        if not all(r["public"] for r in results):
            raise typer.Exit(1)


@app.command()
def upload(paths: Annotated[list[Path], typer.Argument(help="Files to upload (their names give the keys).")]) -> None:
    """Upload files to their keys; prints each key (or that it was already there)."""
    from s3sync.transport import Transport

    with _errors():
        settings = _settings()
        failed = 0
        with Transport(settings) as transport:
            for path in paths:
                try:
                    r = transport.upload(path)
                except S3SyncError as exc:
                    if exc.exit_code == 2:
                        raise
                    failed += 1
                    err.print(f"s3sync: error: {exc}", markup=False, highlight=False)
                    continue
                state = "unchanged" if r.skipped else f"{r.bytes} bytes"
                out.print(f"{r.key}\t{state}", markup=False, highlight=False)
        if failed:
            raise typer.Exit(1)


@app.command()
def download(names: Annotated[list[str], typer.Argument(help="Resource names to download.")]) -> None:
    """Download resources into S3_LOCAL_PATH; prints each local path."""
    from s3sync.transport import Transport

    with _errors():
        settings = _settings()
        failed = 0
        with Transport(settings) as transport:
            for name in names:
                try:
                    path = transport.download(name)
                except S3SyncError as exc:
                    if exc.exit_code == 2:
                        raise
                    failed += 1
                    err.print(f"s3sync: error: {exc}", markup=False, highlight=False)
                    continue
                out.print(str(path), markup=False, highlight=False)
        if failed:
            raise typer.Exit(1)


@app.command()
def tree(
    path: Annotated[str, typer.Argument(help="A folder of the bucket; the whole bucket by default.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the bucket (or a folder of it) as a tree."""
    from s3sync.browser import Browser, FileTreeNode

    with _errors():
        settings = _settings()
        browser = Browser(settings)
        try:
            root = browser.walk(path)
        finally:
            browser.transport.close()
        if as_json:
            out.print(json.dumps(root.to_dict(), indent=2), markup=False, highlight=False)
            return

        def add(branch: Tree, node: FileTreeNode) -> None:
            for child in node:
                if child.is_dir:
                    add(branch.add(f"[bold]{child.name}/[/bold]"), child)
                else:
                    branch.add(f"{child.name} [dim]({child.size} bytes)[/dim]")

        top = Tree(f"[bold]s3://{settings.bucket_name}/{root.path}[/bold]")
        if root.is_file:
            top.add(f"{root.name} [dim]({root.size} bytes)[/dim]")
        else:
            add(top, root)
        out.print(top)


@app.command()
def config(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Print the effective settings (secrets masked), validated as `run` validates them (exit 2).

    Symlinked folders are shown as given, then resolved (the daemon works in the real folders).
    Nothing is created: a folder that does not exist yet is judged by where it would be created.
    """
    from s3sync import preflight

    with _errors():
        given = _load()
        _configure_logging(given)
        values: dict[str, Any] = dict(given.masked())
        real = resolve_folders(given)
        resolved = {name: values[name] for name in ("S3_LOCAL_PATH", "S3_UPLOAD_DIR_PATH")}
        resolved |= {"S3_LOCAL_PATH": str(real.local_path), "S3_UPLOAD_DIR_PATH": str(real.upload_dir_path)}
        if as_json:
            out.print(json.dumps({**values, "resolved": resolved}, indent=2), markup=False, highlight=False)
        else:
            for name, value in values.items():
                out.print(f"{name}={value}", markup=False, highlight=False)
                if resolved.get(name, value) != value:
                    out.print(f"# {name} resolves to {resolved[name]}", markup=False, highlight=False)
        found = preflight.problems(real, create=False)
        if found:
            raise ConfigurationError("; ".join(found))


# --- the daemon ----------------------------------------------------------------------------
@contextmanager
def _maybe_local_server(settings: Settings, requested: bool) -> Iterator[Settings]:
    if not (requested or settings.local_server):
        yield settings
        return
    from s3sync.localserver import DEMO_BUCKET, LocalServer

    data = default_data_dir() / "demo-s3"  # this user's own, like the default folders
    server = LocalServer(data)
    server.start()
    try:
        demo = _settings(
            endpoint_url=server.endpoint,
            bucket_name=settings.bucket_name or DEMO_BUCKET,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region="us-east-1",
            mirror_interval=settings.mirror_interval if settings.mirror_interval != 60 else 10,
            local_server=True,
        )
        from s3sync.transport import make_client

        client = make_client(demo)
        try:
            client.create_bucket(Bucket=demo.require_bucket())
        except Exception as exc:  # noqa: BLE001 - "already exists" is fine; others surface at first use
            if "BucketAlready" not in type(exc).__name__ and "BucketAlready" not in str(exc):
                log.debug("local_server.create_bucket", error=str(exc))
        err.print(
            "\n[bold green]s3sync demo[/bold green]: a local S3 server (rclone) is running.\n"
            f"  endpoint       {server.endpoint}\n"
            f"  bucket         {demo.bucket_name}\n"
            f"  upload folder  {demo.upload_dir_path}   <- drop files here, e.g. CF0001_WHITE_320x320.jpg\n"
            f"  mirror folder  {demo.local_path}   <- the bucket appears here every {demo.mirror_interval:g} s\n"
            f"  bucket files   {data / (demo.bucket_name or '')}\n"
            "  Ctrl-C stops it.\n",
            highlight=False,
        )
        yield demo
    finally:
        server.stop()


def _state_lock(settings: Settings, *, take: bool = True) -> AbstractContextManager[object]:
    """The state's exclusive lock, taken now: a second ``run``/``sync`` on one state exits 2 before doing anything."""
    if not take:
        return nullcontext()
    lock = StateLock(settings.state_path)
    lock.acquire()
    return lock


def _install_signals(stop: threading.Event, reload: threading.Event | None) -> None:
    def on_stop(signum: int, frame: object) -> None:
        stop.set()

    # SIGUSR1 dumps every thread's stack to stderr: how an operator sees where a stuck daemon is.
    # To the process's own stderr (fd 2): inside `call_command(..., stderr=StringIO())` sys.stderr has no fd.
    with suppress(OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__ or sys.stderr, all_threads=True)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if reload is not None:

        def on_hup(signum: int, frame: object) -> None:
            reload.set()

        signal.signal(signal.SIGHUP, on_hup)


@app.command()
def run(
    local_server: Annotated[
        bool, typer.Option("--local-server", help="Start an embedded local S3 server (demo; no bucket needed).")
    ] = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Settings file, read at start and again at each reload (SIGHUP); its values win over the environment.",
        ),
    ] = None,
) -> None:
    """Run the sync daemon in the foreground (SIGTERM/SIGINT stop it, SIGHUP reloads settings)."""
    from s3sync import preflight
    from s3sync.service import Service

    with _errors():
        if env_file is not None:
            _ctx.env_file, _ctx.file_wins = str(env_file), True
        stop, reload = threading.Event(), threading.Event()
        _install_signals(stop, reload)
        base = _settings()
        lock = _state_lock(base)  # for the daemon's whole life, reloads included
        _started()
        with lock, _maybe_local_server(base, local_server) as settings:
            found = preflight.problems(settings)
            if found:
                raise ConfigurationError("; ".join(found))
            demo = settings

            def reconfigure() -> Settings:
                # Checked by the running service before any of it applies; the demo keeps its server.
                return demo if demo.local_server else resolve_folders(_load())

            _ctx.daemon = True
            previous: Settings | None = None
            while True:
                try:
                    service = Service(settings, subscribers=_host().subscribers)
                    service.state_lock = lock if isinstance(lock, StateLock) else None
                except S3SyncError as exc:  # the reloaded settings failed after all: back to the old ones
                    if previous is None:
                        raise
                    log.error("daemon.reload_failed", reason=str(exc), kept="the previous settings")
                    settings, previous = previous, None
                    continue
                service.run(stop, reload=reload, reconfigure=reconfigure)
                if stop.is_set() or service.next_settings is None:
                    _leave_abandoned_workers(service)
                    break
                previous, settings = settings, service.next_settings
                _configure_logging(settings)  # S3_LOG_FORMAT / S3_LOG_LEVEL reload too
                # READY=1 is sent again by the new service once its scan is done.


def _leave_abandoned_workers(service: Any) -> None:
    """Exit now when upload workers are stuck past S3_SHUTDOWN_TIMEOUT (a read that never returns).

    The interpreter would wait for them at exit, and systemd would have to SIGKILL the daemon.
    Everything durable is done by now: the state is closed, and the interrupted uploads are in
    it (their multipart uploads are aborted at the next start).
    """
    uploader = getattr(service, "uploader", None)
    stuck = list(getattr(uploader, "abandoned", []) or [])
    if not stuck:
        return
    log.warning("daemon.workers_abandoned", paths=stuck[:10], count=len(stuck))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _progress_callback() -> tuple[Callable[[str, int], None], Callable[[], None]]:
    from rich.live import Live

    counts: dict[str, int] = {}
    started = time.monotonic()
    nbytes = [0]

    def render() -> str:
        elapsed = max(time.monotonic() - started, 1e-6)
        parts = [f"{k} {v}" for k, v in sorted(counts.items())]
        rate = nbytes[0] / elapsed / 1e6
        return f"{', '.join(parts) or 'scanning...'}  |  {nbytes[0] / 1e6:.1f} MB at {rate:.1f} MB/s"

    live = Live(render(), console=err, refresh_per_second=4, transient=True)
    live.start()
    lock = threading.Lock()

    def update(kind: str, n: int) -> None:
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            nbytes[0] += n
            live.update(render())

    return update, live.stop


@app.command()
def sync(
    upload_only: Annotated[bool, typer.Option("--upload-only", help="Only the upload pass.")] = False,
    mirror_only: Annotated[bool, typer.Option("--mirror-only", help="Only the mirror pass.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")] = False,
    local_server: Annotated[bool, typer.Option("--local-server", help="Use the embedded local S3 server.")] = False,
    retry_rejected: Annotated[
        bool, typer.Option("--retry-rejected", help="Look again at files rejected or in conflict before.")
    ] = False,
) -> None:
    """One catch-up upload pass and one mirror pass, then exit (1 if any item failed)."""
    from s3sync.service import Service

    if upload_only and mirror_only:
        err.print("s3sync: error: --upload-only and --mirror-only exclude each other", markup=False)
        raise typer.Exit(2)
    with _errors():
        base = _settings()
        lock = _state_lock(base, take=not dry_run)  # a dry run writes nothing: it needs no lock
        _started()
        with lock, _maybe_local_server(base, local_server) as settings:
            settings.require_bucket()
            update: Callable[[str, int], None] | None = None
            finish: Callable[[], None] = lambda: None  # noqa: E731
            if err.is_terminal and not dry_run:
                update, finish = _progress_callback()
            subscribers = () if dry_run else _host().subscribers  # a dry run did nothing to tell of
            service = Service(settings, on_result=update, read_only=dry_run, subscribers=subscribers)
            try:
                summary = service.sync_once(
                    upload=not mirror_only, mirror=not upload_only, dry_run=dry_run, retry_rejected=retry_rejected
                )
            finally:
                finish()
                service.close()
        verb = "would upload" if dry_run else "uploaded"
        line = []
        if not mirror_only:
            line += [
                f"{verb} {summary.uploaded} ({summary.uploaded_bytes} bytes)",
                f"unchanged {summary.upload_skipped}",
                f"rejected {summary.rejected}",
                f"conflicts {summary.conflicts}",
                f"failed {summary.upload_failed}",
            ]
        if summary.mirror is not None:
            m = summary.mirror
            line.append(
                f"mirror: listed {m.listed}, {'would download' if dry_run else 'downloaded'} {m.downloaded} "
                f"({m.bytes} bytes), "
                f"deleted {m.deleted}, failed {m.failed}, unsafe keys {m.unsafe}, key conflicts {m.conflicts}"
            )
            if m.listing_error is not None:  # exit 1 with every count at 0 needs its reason on the line
                line.append(f"mirror incomplete: {m.listing_error}")
        err.print("; ".join(line), markup=False, highlight=False)
        if summary.failed:
            raise typer.Exit(1)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Print the daemon's health from its state database."""
    from s3sync.health import assess
    from s3sync.service import read_status, reported_health

    with _errors():
        settings = _settings()
        snap = read_status(settings)
        if snap is None:
            err.print(f"s3sync: no state database at {settings.state_path} (has the daemon run?)", markup=False)
            raise typer.Exit(1)
        now = time.time()
        beat = float(snap.get("time") or 0)
        health = reported_health(snap, settings, now)
        verdict = assess(health)  # the function /healthz and the watchdog use
        last_ok = health.last_mirror_ok
        problems = list(verdict.reasons)
        snap.update(verdict.to_dict())
        if as_json:
            out.print(json.dumps(snap, indent=2, default=str), markup=False, highlight=False)
        else:
            table = Table(title="s3sync status", show_header=False, title_justify="left")
            table.add_row("healthy", "[green]yes[/green]" if not problems else "[red]no[/red]: " + "; ".join(problems))
            table.add_row("last report", f"{int(now - beat)} s ago" if beat else "never")
            counters = ("queued", "uploaded", "skipped", "rejected", "failed", "recorded_uploaded", "recorded_rejected")
            for k in (*counters, "upload_conflicts"):
                table.add_row(k.replace("_", " "), str(snap.get(k, 0)))
            table.add_row("last mirror ok", f"{int(now - float(last_ok))} s ago" if last_ok else "never")
            for warning in verdict.warnings:
                table.add_row("warning", warning)
            out.print(table)
        if problems:
            raise typer.Exit(1)


# --- the state database ----------------------------------------------------------------------
state_app = typer.Typer(
    name="state", help="The state database (a cache of what the bucket and the folders say).", no_args_is_help=True
)
app.add_typer(state_app)


@state_app.command("rebuild")
def state_rebuild() -> None:
    """Recreate the state from one listing of the bucket and one scan of the upload folder.

    Files the bucket already holds with the same content are recorded as uploaded (never sent
    again); the old file is moved aside as <name>.corrupt-<time> (or .old-<time>). Takes the lock.
    """
    from s3sync.rebuild import rebuild_state

    with _errors():
        settings = _settings()
        settings.require_bucket()
        with _state_lock(settings):
            r = rebuild_state(settings)
        line = [
            f"state rebuilt: {r.scanned} files in the upload folder",
            f"already in the bucket {r.recorded}",
            f"to upload {r.to_upload}" + (f" ({r.unverifiable} unverifiable here)" if r.unverifiable else ""),
            f"invalid names {r.invalid}",
            "mirror records empty (the next pass adopts matching files)",
        ]
        if r.moved_aside is not None:
            line.append(f"{'corrupted' if r.was_corrupt else 'previous'} state moved to {r.moved_aside}")
        err.print("; ".join(line), markup=False, highlight=False)


# --- S3 Event Notifications ------------------------------------------------------------------
events_app = typer.Typer(
    name="events",
    help="S3 Event Notifications through SQS (and SNS for many hosts): wire the bucket, check the wiring.",
    no_args_is_help=True,
)
app.add_typer(events_app)


@events_app.command("setup")
def events_setup(
    queue: Annotated[str, typer.Option("--queue", help="The SQS queue to create or reuse (a standard queue).")],
    topic: Annotated[
        str | None,
        typer.Option("--topic", help="Fan out through this SNS topic (ARN): bucket -> topic -> this queue."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; change nothing.")] = False,
    source_account: Annotated[
        str | None,
        typer.Option("--source-account", help="The bucket owner's account id (default: the queue's or topic's)."),
    ] = None,
) -> None:
    """Create the queue, its access policy and the bucket's notification configuration (idempotent).

    Merges with the bucket's other notification configurations; prints each change, or that
    there was none. The last line is the S3_EVENTS_QUEUE_URL to give the daemon.
    """
    from s3sync.eventsetup import EventSetup, make_client
    from s3sync.transport import make_client as make_s3_client

    with _errors():
        settings = _settings()
        settings.require_bucket()
        sns = make_client(settings, "sns") if topic is not None else None
        setup = EventSetup(
            settings,
            s3=make_s3_client(settings),
            sqs=make_client(settings, "sqs"),
            sns=sns,
            sts=make_client(settings, "sts"),  # only asked for the account of a queue not created yet
            say=lambda line: out.print(line, markup=False, highlight=False),
        )
        report = setup.run(queue, topic=topic, dry_run=dry_run, source_account=source_account)
        if not report.changes:
            out.print(
                f"nothing to change: queue {queue}, its access policy"
                + (", the topic's policy and subscription" if topic else "")
                + " and the bucket's notification configuration are in place",
                markup=False,
                highlight=False,
            )
        elif report.kept:
            out.print(f"kept {report.kept} other notification configuration(s) of the bucket", markup=False)
        if dry_run:
            out.print("dry run: nothing was changed", markup=False, highlight=False)
        url = report.queue_url or f"(the URL of queue {queue}, once created)"
        out.print(f"S3_EVENTS_QUEUE_URL={url}", markup=False, highlight=False)


@events_app.command("check")
def events_check(
    queue_url: Annotated[
        str | None, typer.Option("--queue-url", help="The queue to watch (default: S3_EVENTS_QUEUE_URL).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, max=600.0, help="Seconds to wait for each event.")
    ] = 20.0,
) -> None:
    """Prove the wiring end to end: put a marker object, wait for its events, delete it (exit 1: fail).

    The marker is S3_MIRROR_PREFIX + ".s3sync-events-check/<uuid>" (never mirrored). Messages
    on the queue that are not the marker's are left for the daemon; a daemon reading the same
    queue may take the marker's event itself, so stop it while checking.
    """
    from s3sync.eventqueue import make_sqs_client
    from s3sync.eventsetup import EventCheck
    from s3sync.transport import make_client as make_s3_client

    with _errors():
        settings = _settings()
        settings.require_bucket()
        url = queue_url or settings.events_queue_url
        if not url:
            raise ConfigurationError(
                "S3_EVENTS_QUEUE_URL: not set (or give --queue-url)", setting="S3_EVENTS_QUEUE_URL"
            )
        sqs = make_sqs_client(settings.model_copy(update={"events_queue_url": url}))  # the daemon's client
        result = EventCheck(settings, s3=make_s3_client(settings), sqs=sqs).run(url, timeout=timeout)
        if not result.passed:
            err.print(f"s3sync: {result.line()}", markup=False, highlight=False)
            raise typer.Exit(1)
        out.print(result.line(), markup=False, highlight=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # The command is over and the process exits next: every object still alive lives until
        # then. Frozen, they spare shutdown's collections a walk over them (0.1-0.15 s after a
        # run that built botocore's client). Nothing is left unflushed: the commands close what
        # they open.
        gc.freeze()
