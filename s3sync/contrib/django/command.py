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
from s3sync.outcomes import Subscriber

__all__ = ["PROG_NAME", "run_cli", "split_django_options"]

PROG_NAME = "manage.py s3sync"

#: Django's own options (BaseCommand's, less ``--version``), which take a value.
_DJANGO_VALUE_OPTIONS = frozenset({"--settings", "--pythonpath", "--verbosity", "-v"})
#: ... and which do not (``--debug`` is this command's: the same as ``--traceback``).
_DJANGO_FLAGS = frozenset({"--traceback", "--no-color", "--force-color", "--skip-checks", "--debug"})


def split_django_options(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(django_options, s3sync_args)``: Django's options taken from anywhere in ``args``.

    ``manage.py s3sync sync --settings=shop.settings`` works like ``--settings`` given first;
    everything else (``--env-file``, ``--version``, ``--help``...) is the ``s3sync`` command line's,
    in its order. After ``--``, everything is the command line's.

    >>> split_django_options(["--env-file", "x", "config", "--settings", "shop.settings", "-v2"])
    (['--settings', 'shop.settings', '-v2'], ['--env-file', 'x', 'config'])
    """
    django: list[str] = []
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--":
            rest.extend(items)
            break
        name, eq, _ = arg.partition("=")
        if name in _DJANGO_VALUE_OPTIONS:
            django.append(arg)
            if not eq:
                value = next(items, None)
                if value is not None:
                    django.append(value)
        elif arg in _DJANGO_FLAGS or (arg.startswith("-v") and arg[2:].isdigit()):
            django.append(arg)
        else:
            rest.append(arg)
    return django, rest


def run_cli(
    args: Sequence[str],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    subscribers: Sequence[Subscriber] = (),
) -> int:
    """Run ``s3sync ARGS`` with the project's settings and return its exit code (0, 1, 2, 130).

    ``stdout``/``stderr`` (e.g. from ``call_command(..., stdout=buf)``) receive the command's output;
    ``subscribers`` are told of every file's outcome by ``run`` and ``sync`` (the Django signals).
    No arguments prints the help and is not an error.
    """
    from s3sync.cli import Host, app  # typer, rich and the service: only when a command actually runs

    args = list(args) or ["--help"]
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
            command.main(args=args, prog_name=PROG_NAME, standalone_mode=True, obj=Host(tuple(subscribers)))
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
