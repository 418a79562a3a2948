"""``python manage.py s3sync COMMAND [ARGS]``: the ``s3sync`` command with the project's settings.

Django's own options (``--settings``, ``--pythonpath``, ``--traceback``...) are taken from anywhere
on the line; everything else is the ``s3sync`` command line, as it is (``--env-file F``,
``--version``, ``--help``: the command line's own). ``run`` and ``sync`` send the signals of
:mod:`s3sync.contrib.django.signals`. From ``manage.py``, the process exits
with the command line's status and nothing more is printed: its error is already one line
(``s3sync: error: ...``), and Django's ``CommandError: ...`` would be a second. From
``call_command``, a non-zero exit is a :class:`CommandError` with the same ``returncode``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError

from s3sync.contrib.django.command import run_cli, split_django_options
from s3sync.contrib.django.signals import SignalSubscriber


class Command(BaseCommand):  # type: ignore[misc] # Django ships no type stubs
    """The management command; see the module docstring."""

    help = (
        "Run an s3sync command (run, sync, check, publish-check, tree, config, upload, download, status) with the "
        "S3_* settings of this Django project. `manage.py s3sync` alone lists them; "
        "`manage.py s3sync COMMAND --help` describes one."
    )
    # The command line reports configuration errors itself, with its exit code 2; `manage.py check`
    # runs the s3sync checks (and everyone else's) on demand.
    requires_system_checks: ClassVar[tuple[str, ...]] = ()
    _from_argv = False

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py s3sync ...``: the exit status is the command line's, its one error line the only one."""
        self._from_argv = True
        super().run_from_argv(argv)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Django's parser, which takes Django's options from anywhere and leaves the rest to s3sync."""
        parser: argparse.ArgumentParser = super().create_parser(prog_name, subcommand, **kwargs)
        parse = parser.parse_args

        def parse_args(args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
            django, rest = split_django_options(list(args or []))
            options: argparse.Namespace = parse(django, namespace)
            options.args = rest
            return options

        parser.parse_args = parse_args  # type: ignore[method-assign,assignment]
        return parser

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--debug``, then the s3sync command line as it is."""
        parser.add_argument(
            "--debug",
            action="store_true",
            help="Tracebacks and debug events, like `s3sync --debug` (as does --traceback).",
        )
        parser.add_argument(
            "args", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS]", help="An s3sync command and its arguments."
        )

    def handle(self, *args: str, **options: Any) -> None:
        """Run the command line; raise :class:`CommandError` with its exit code when it is not 0."""
        argv = ["--debug", *args] if options.get("debug") or options.get("traceback") else list(args)
        code = run_cli(
            argv, stdout=options.get("stdout"), stderr=options.get("stderr"), subscribers=(SignalSubscriber(),)
        )
        if code != 0 and self._from_argv:
            raise SystemExit(code)
        if code != 0:
            raise CommandError(f"s3sync exited with status {code}", returncode=code)
