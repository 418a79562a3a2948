"""Run the ``s3sync`` command line in this process, with the Django project's settings.

The management command is the ``s3sync`` command itself (:data:`s3sync.cli.app`), not a copy:
same options, output, messages and exit codes. The settings reach it through the ``S3_*``
environment of this process (:func:`~s3sync.contrib.django.conf.environment_for`), set for the
duration of the call and then restored, so the command line builds exactly the settings the
project's ``Transport()`` uses. The logging set-up the command line installs is undone afterwards,
so ``call_command("s3sync", ...)`` leaves the host process's logging as it found it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import structlog
import typer.main

from s3sync.contrib.django.conf import environment_for

__all__ = ["PROG_NAME", "run_cli"]

PROG_NAME = "manage.py s3sync"


def run_cli(args: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``s3sync ARGS`` with the project's settings and return its exit code (0, 1, 2, 130).

    ``stdout``/``stderr`` (e.g. from ``call_command(..., stdout=buf)``) receive the command's output.
    """
    from s3sync.cli import app  # typer, rich and the service: only when a command actually runs

    command = typer.main.get_command(app)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(environment_for()))
        stack.enter_context(_logging_restored())
        if stdout is not None:
            stack.enter_context(contextlib.redirect_stdout(stdout))
        if stderr is not None:
            stack.enter_context(contextlib.redirect_stderr(stderr))
        try:
            # standalone_mode: the exact path of the `s3sync` script, whose every ending is SystemExit.
            command.main(args=list(args), prog_name=PROG_NAME, standalone_mode=True)
        except SystemExit as exc:
            return _exit_code(exc.code)
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    config: dict[str, Any] = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**config)
        # The command line's logging.basicConfig(force=True) replaced the root handlers.
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
