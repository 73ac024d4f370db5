"""The error taxonomy: every failure is either terminal (wait for new input) or transient (retry with backoff).

Messages put the subject first (``Deployment.apps/shop/web: field is immutable: spec.selector``, or
``apps/web/templates/deploy.yaml:12: undefined value values.image.tag``) and fit on one line.
Subclass these in the module that owns the concern; callers decide on retry by these two bases only.
"""

from __future__ import annotations


class GitsyncError(Exception):
    """Base of every error gitsync reports to a user."""


class TerminalError(GitsyncError):
    """Retrying the same input cannot succeed (bad template, invalid manifest, immutable field, forbidden)."""


class TransientError(GitsyncError):
    """May succeed later (network, 5xx, 429, conflict on a resourceVersion); ``retry_after`` in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
