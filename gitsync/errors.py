"""The error taxonomy: every failure is either terminal (wait for new input) or transient (retry with backoff).

Messages put the subject first (``Deployment.apps/shop/web: field is immutable: spec.selector``, or
``apps/web/templates/deploy.yaml:12: undefined value values.image.tag``) and fit on one line.
Subclass these in the module that owns the concern; callers decide on retry by these two bases only.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Retry(StrEnum):
    """Whether the same input can succeed later: the one classification the agent requeues by (``transient``:
    back off and try again; ``terminal``: wait for a new revision) and the CLI picks its exit status by. Values
    are the log and wire format."""

    TERMINAL = "terminal"
    TRANSIENT = "transient"


def retry_of(error: BaseException) -> Retry:
    """``transient`` for a ``TransientError``, ``terminal`` for anything else (a content error, or a bug)."""
    return Retry.TRANSIENT if isinstance(error, TransientError) else Retry.TERMINAL


def retry_of_all(classes: Iterable[Retry | None]) -> Retry | None:
    """The class of several failures together: ``transient`` when any is (a retry may advance), ``terminal`` when
    all are, None when there are none."""
    found = {c for c in classes if c is not None}
    if not found:
        return None
    return Retry.TRANSIENT if Retry.TRANSIENT in found else Retry.TERMINAL


class GitsyncError(Exception):
    """Base of every error gitsync reports to a user."""


class TerminalError(GitsyncError):
    """Retrying the same input cannot succeed (bad template, invalid manifest, immutable field, forbidden)."""


class TransientError(GitsyncError):
    """May succeed later (network, 5xx, 429, conflict on a resourceVersion); ``retry_after`` in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryRejectedError(TerminalError):
    """A metrics provider refused the query itself (PromQL that does not parse: Prometheus answers HTTP 400
    ``bad_data``): asking again cannot succeed until the values change."""


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
    """The API server rejected the object (HTTP 422 or 400, or the HTTP 500 server-side apply answers for a value of
    the wrong type); ``immutable`` when a field cannot change in place."""

    status = 422

    def __init__(self, message: str, *, fields: tuple[str, ...] = (), immutable: bool = False) -> None:
        super().__init__(message)
        self.fields = fields
        self.immutable = immutable


TERMINATING = "because it is being terminated"
"""How the API server ends the 403 it answers for a create in a namespace being deleted (NamespaceLifecycle)."""


class ForbiddenError(KubeError, TerminalError):
    """RBAC denies the request (HTTP 403, or 401)."""

    status = 403


class NamespaceTerminatingError(ForbiddenError, TransientError):
    """The object's namespace is being deleted (Terminating): the API server refuses every create in it until the
    deletion finishes (HTTP 403 whose message ends ``TERMINATING``: no permission problem). Transient, unlike other
    403s: once the namespace is gone, the next sync creates it anew; ``retry_of`` and every ``TransientError``
    check see it as such."""


class NotFoundError(KubeError, TransientError):
    """The object's kind is not served, or its namespace does not exist (HTTP 404 where a write expected a parent).

    Transient: the parent may be on its way (a CRD or Namespace another app of the environment installs, a CRD
    not yet in discovery), so a retry with backoff can succeed without a new revision.
    """

    status = 404


class KindNotServedError(NotFoundError):
    """Discovery does not list the kind (its CRD is missing, not yet Established, or not yet in discovery)."""


class UntrustedServerError(KubeError, TerminalError):
    """The API server's certificate does not verify against the kubeconfig's CA: a configuration error, which no
    retry fixes."""


class StaleError(KubeError, TransientError):
    """Someone else wrote first (HTTP 409 on an update or create); re-read and try again."""

    status = 409


class UnavailableError(KubeError, TransientError):
    """Network failure, HTTP 429 or 5xx; ``retry_after`` carries the server's Retry-After when it sent one."""


class UnreachableError(UnavailableError):
    """The API server could not be reached at all (connection refused or reset, timed out, name not resolved):
    the cluster is down or cut off, not merely busy. A watch cache that meets it stops answering from memory
    until its cluster answers again (``gitsync.cache``)."""


class WatchExpired(KubeError, TransientError):
    """The watch's resourceVersion is too old (HTTP 410 Gone): list again and watch from the list's version."""

    status = 410
