"""Field ownership: when a field another manager owns is drift that gitsync takes back, and when it is not.

Server-side apply moves a field to whoever last wrote it. A person's ``kubectl edit`` of a field gitsync declares
therefore makes gitsync's next apply a conflict, although, as Argo CD and Flux users know it, that edit is drift:
shown by ``gitsync diff`` and taken back by ``sync`` and self-heal. A controller's field (an HPA's ``replicas``)
is not: it is never forced, and a conflict with it is reported for that one object.

The rule (``takes_over``): an object's conflict is taken over, by applying that object alone with force, when
every manager in it is a person's kubectl (``is_kubectl``) and no conflicting field is in the object's
``gitsync.dev/ignore-differences`` list. Flux's ``ssa`` reaches the same end by removing those managers' entries
from ``managedFields`` first; forcing one object needs no extra write and changes only the conflicting fields.

Contract: pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gitsync.errors import FieldConflictError

__all__ = ["KUBECTL_MANAGERS", "is_kubectl", "takes_over"]

KUBECTL_MANAGERS = frozenset(
    {
        "kubectl",  # kubectl scale, kubectl apply --server-side: requests without a manager of their own
        "kubectl-edit",
        "kubectl-client-side-apply",  # kubectl apply
        "kubectl-patch",
        "kubectl-label",
        "kubectl-annotate",
        "kubectl-replace",
        "kubectl-create",  # an object a person created by hand, since adopted by the render
        "kubectl-set",  # kubectl set image / env / resources
        "kubectl-rollout",  # kubectl rollout undo / restart
    }
)
"""The field managers kubectl (1.33 to 1.37, measured) writes as by default: a person's hand, never a controller.
``kubectl scale`` writes as plain ``kubectl``; an HPA writes ``replicas`` as its own manager."""


def is_kubectl(manager: str) -> bool:
    return manager in KUBECTL_MANAGERS


def takes_over(conflict: FieldConflictError, ignore: Sequence[str] = ()) -> bool:
    """Whether an apply may force ``conflict``: only kubectl managers, no field under the object's ``ignore``
    pointers (``normalise.ignored_pointers``)."""
    if not conflict.managers or not all(is_kubectl(m) for m in conflict.managers):
        return False
    ignored = [_dotted(p) for p in ignore]
    return not any(_within(field, ignored) for field in conflict.fields)


def _dotted(pointer: str) -> str:
    """``/spec/replicas`` as the API server names fields in a conflict: ``.spec.replicas``."""
    return "".join("." + part.replace("~1", "/").replace("~0", "~") for part in pointer.strip("/").split("/"))


def _within(field: str, prefixes: Iterable[str]) -> bool:
    return any(field == p or field.startswith((p + ".", p + "[")) for p in prefixes)
