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


class CorruptStateError(TerminalError):
    """Stored state (a state ConfigMap) cannot be read back; the message names it and how to reset it."""


class KubeError(GitsyncError):
    """A Kubernetes API error about one object; the message starts with its ``ObjectId``.

    Concrete errors below are also ``TerminalError`` or ``TransientError``, so callers that only decide on retry
    need nothing else; stages that react to a specific failure (force a conflict, recreate on an immutable field)
    catch the specific class. Raised by ``gitsync.adapters.kube``.
    """

    status: int = 0


class FieldConflictError(KubeError, TerminalError):
    """Server-side apply found fields owned by another field manager (HTTP 409 on an apply)."""

    status = 409

    def __init__(self, message: str, *, fields: tuple[str, ...] = (), managers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
        self.managers = managers


class InvalidObjectError(KubeError, TerminalError):
    """The API server rejected the object (HTTP 422 or 400); ``immutable`` when a field cannot change in place."""

    status = 422

    def __init__(self, message: str, *, fields: tuple[str, ...] = (), immutable: bool = False) -> None:
        super().__init__(message)
        self.fields = fields
        self.immutable = immutable


class ForbiddenError(KubeError, TerminalError):
    """RBAC denies the request (HTTP 403, or 401)."""

    status = 403


class NotFoundError(KubeError, TerminalError):
    """The object's kind is not served, or its namespace does not exist (HTTP 404 where a write expected a parent)."""

    status = 404


class StaleError(KubeError, TransientError):
    """Someone else wrote first (HTTP 409 on an update or create); re-read and try again."""

    status = 409


class UnavailableError(KubeError, TransientError):
    """Network failure, HTTP 429 or 5xx; ``retry_after`` carries the server's Retry-After when it sent one."""


class WatchExpired(KubeError, TransientError):
    """The watch's resourceVersion is too old (HTTP 410 Gone): list again and watch from the list's version."""

    status = 410
