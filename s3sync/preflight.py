"""Whether a configuration can run the daemon: bucket set, folders usable, state usable.

``s3sync run`` checks this at start, a SIGHUP reload checks the new settings *before* applying
any of them (the daemon keeps its old settings when this finds a problem), and ``s3sync config``
reports the same problems without changing anything (exit 2).

Folder checks are real operations, not ``os.access``: as root, ``access()`` says yes to a folder
under ``/proc`` or on a read-only mount, where the first write then fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from s3sync.errors import S3SyncError
from s3sync.settings import ENV_PREFIX, Settings

__all__ = ["problems"]

# A probe file that is left behind (a crash between create and unlink) is swept at the next
# start like any other temp file of the mirror, and ignored (a hidden name) in the upload folder.
_PROBE_PREFIX = ".s3sync-tmp-probe-"


def _folders(settings: Settings) -> list[tuple[str, Path]]:
    named = [
        ("upload_dir_path", settings.upload_dir_path),
        ("local_path", settings.local_path),
        ("done_dir", settings.done_dir),
        ("rejected_dir", settings.rejected_dir),
    ]
    return [(ENV_PREFIX + name.upper(), Path(os.path.realpath(p))) for name, p in named if p is not None]


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (raises OSError when that is not possible)."""
    fd, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=folder)
    os.close(fd)
    Path(probe).unlink()


def _folder_problem(name: str, path: Path, *, create: bool) -> str | None:
    """Why ``path`` cannot be used as a writable folder (None: it can)."""
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            _probe(path)
            return None
        # Leave nothing behind: probe the folder, or create and remove the first missing one.
        missing = None
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing, missing = existing.parent, existing
        if not existing.is_dir():
            return f"{name}: {str(existing)!r} is not a folder"
        if missing is None:
            _probe(existing)
        else:
            missing.mkdir()
            missing.rmdir()
    except OSError as exc:
        return f"{name}: {str(path)!r} is not a usable folder ({_reason(exc)})"
    return None


def problems(settings: Settings, *, create: bool = True) -> list[str]:
    """One line per reason ``settings`` cannot run the daemon; empty when it can.

    ``create`` (the daemon) makes missing folders, writes and removes a probe file in each, and
    opens the state database, as the daemon is about to. Without it (``s3sync config``) nothing
    is left behind: a probe file is created and removed in each folder, and a folder that does not
    exist yet is judged by creating and removing the first missing one.
    """
    found: list[str] = []
    try:
        settings.require_bucket()
    except S3SyncError as exc:
        found.append(str(exc))
    for name, path in _folders(settings):
        problem = _folder_problem(name, path, create=create)
        if problem is not None:
            found.append(problem)
    if create:
        from s3sync.state import State  # sqlite3: only when the state is really opened

        try:
            State(settings.state_path).close()
        except S3SyncError as exc:
            found.append(str(exc))
        except OSError as exc:
            found.append(f"{ENV_PREFIX}STATE_PATH: cannot use {str(settings.state_path)!r} ({_reason(exc)})")
    else:
        state_dir = settings.state_path.parent
        problem = _folder_problem(f"{ENV_PREFIX}STATE_PATH", state_dir, create=False)
        if problem is not None:
            found.append(problem)
        elif settings.state_path.exists() and not settings.state_path.is_file():
            found.append(f"{ENV_PREFIX}STATE_PATH: {str(settings.state_path)!r} is not a regular file")
        elif settings.state_path.exists() and not os.access(settings.state_path, os.R_OK | os.W_OK):
            found.append(f"{ENV_PREFIX}STATE_PATH: {str(settings.state_path)!r} is not readable and writable")
    return list(dict.fromkeys(found))  # the same folder named twice gives one line
