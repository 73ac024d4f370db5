"""Notifications: which changes of a reconcile people hear about (``notices``), what is sent to a receiver
(``formats``), kept in the cluster so each is sent once (``outbox``), and delivered off the reconcile's thread
(``sender``). The record stage's ``NotifySink`` (``gitsync.record``) feeds it; the agent composes it from
``notifications:`` in agent.yaml. See docs/notifications.md.
"""

from gitsync.notify.formats import SIGNATURE_HEADER, Format, Receiver, signature
from gitsync.notify.notices import Notice, Notification, notices
from gitsync.notify.outbox import Outbox
from gitsync.notify.sender import Notifier, Policy

__all__ = [
    "SIGNATURE_HEADER",
    "Format",
    "Notice",
    "Notification",
    "Notifier",
    "Outbox",
    "Policy",
    "Receiver",
    "notices",
    "signature",
]
