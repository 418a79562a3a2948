"""What became of each file: the uploader's and the mirror's outcomes, for whoever subscribes.

The uploader and the mirror report every outcome to one :class:`ResultSink` (the service's);
the service turns it into an :class:`Outcome` for its metrics and for each :class:`Subscriber`
it was given (s3transfer's ``BaseSubscriber`` habit): the Django app's signals are one, and a
library user can add their own without an ``if`` in the transfer code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["Outcome", "ResultSink", "Subscriber"]


class ResultSink(Protocol):
    """``sink(outcome, nbytes, seconds, key=..., path=..., reason=...)``: what the workers call."""

    def __call__(
        self,
        outcome: str,
        nbytes: int,
        seconds: float,
        /,
        *,
        key: str | None = None,
        path: Path | None = None,
        reason: str | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """One file's fate.

    ``direction`` ``upload``: ``outcome`` is ``succeeded``, ``skipped``, ``rejected``, ``conflict`` or
    ``failed`` (``path`` the file in the upload folder); ``download``: ``downloaded``, ``skipped``,
    ``failed`` or ``deleted`` (``path`` the file in the mirror folder).
    """

    direction: Literal["upload", "download"]
    outcome: str
    key: str | None = None
    path: Path | None = None
    nbytes: int = 0
    seconds: float = 0.0
    reason: str | None = None


class Subscriber(Protocol):
    """Told of every outcome, on the worker thread that had it: return quickly, raise nothing."""

    def on_outcome(self, outcome: Outcome) -> None: ...
