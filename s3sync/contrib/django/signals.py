"""Django signals sent by the daemon when it runs inside Django (``manage.py s3sync run`` or ``sync``).

Every signal is sent with ``sender="s3sync"`` and these keyword arguments:

* ``resource_uploaded``: ``key``, ``path`` (the file in the upload folder), ``name``, ``size`` (bytes sent);
* ``resource_downloaded``: ``key``, ``path`` (the file in the mirror folder), ``name``, ``size``;
* ``resource_rejected``: ``path``, ``name``, ``reason`` (why the name or file was refused).

``outcome`` (an :class:`s3sync.outcomes.Outcome`) is passed to every receiver too. Receivers run on
s3sync's worker threads, after the file is safely in the bucket or in the mirror folder: keep them
short, and call ``django.db.close_old_connections()`` in one that uses the database. An exception
in a receiver is logged (``subscriber.failed``) and never fails a transfer.

>>> from django.dispatch import receiver  # doctest: +SKIP
>>> @receiver(resource_uploaded)  # doctest: +SKIP
... def index_image(sender, key, path, name, size, **kwargs):
...     Picture.objects.update_or_create(key=key, defaults={"size": size})
"""

from __future__ import annotations

from django.dispatch import Signal

from s3sync.outcomes import Outcome

__all__ = ["SENDER", "SignalSubscriber", "resource_downloaded", "resource_rejected", "resource_uploaded"]

SENDER = "s3sync"

resource_uploaded = Signal()
resource_downloaded = Signal()
resource_rejected = Signal()

_SIGNALS: dict[tuple[str, str], Signal] = {
    ("upload", "succeeded"): resource_uploaded,
    ("download", "downloaded"): resource_downloaded,
    ("upload", "rejected"): resource_rejected,
}


class SignalSubscriber:
    """An :class:`s3sync.outcomes.Subscriber` that sends the signals above."""

    def on_outcome(self, outcome: Outcome) -> None:
        """Send the signal for ``outcome``, if it has one (skips, failures and deletes have none)."""
        signal = _SIGNALS.get((outcome.direction, outcome.outcome))
        if signal is None:
            return
        name = outcome.path.name if outcome.path is not None else (outcome.key or "").rpartition("/")[2]
        fields: dict[str, object] = {"path": outcome.path, "name": name, "outcome": outcome}
        if outcome.outcome == "rejected":
            fields["reason"] = outcome.reason
        else:
            fields |= {"key": outcome.key, "size": outcome.nbytes}
        signal.send(sender=SENDER, **fields)
