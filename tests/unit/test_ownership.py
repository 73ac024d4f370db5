"""Which conflicts a sync takes back (a person's kubectl) and which it reports (a controller's fields)."""

from __future__ import annotations

import pytest

from gitsync.errors import FieldConflictError, Retry, retry_of, retry_of_all
from gitsync.ownership import takes_over


def conflict(*managers: str, fields: tuple[str, ...] = (".spec.replicas",)) -> FieldConflictError:
    return FieldConflictError("Deployment.apps/shop/web: conflict", fields=fields, managers=managers)


@pytest.mark.parametrize(
    ("managers", "fields", "ignore", "taken"),
    [
        (("kubectl-edit",), (".spec.replicas",), (), True),
        (("kubectl-client-side-apply",), (".data.color",), (), True),
        (("kubectl-patch", "kubectl-label"), (".metadata.labels.team",), (), True),
        (("kubectl",), ('.spec.template.spec.containers[name="c"].image',), (), True),
        (("kubectl-create",), (".spec.replicas",), (), True),
        (("horizontal-pod-autoscaler",), (".spec.replicas",), (), False),
        (("kubectl-edit", "ops-team"), (".spec.replicas",), (), False),
        (("kube-controller-manager",), (".spec.replicas",), (), False),
        ((), (".spec.replicas",), (), False),
        (("kubectl-edit",), (".spec.replicas",), ("/spec/replicas",), False),
        (("kubectl-edit",), ('.spec.template.spec.containers[name="c"].image',), ("/spec/template",), False),
        (("kubectl-edit",), (".spec.replicas",), ("/spec/replicasX",), True),
    ],
)
def test_takes_over_only_a_persons_kubectl_and_never_an_ignored_field(
    managers: tuple[str, ...], fields: tuple[str, ...], ignore: tuple[str, ...], taken: bool
) -> None:
    assert takes_over(conflict(*managers, fields=fields), ignore) is taken


def test_retry_classes() -> None:
    assert retry_of(conflict("ops")) is Retry.TERMINAL
    assert retry_of_all([]) is None
    assert retry_of_all([None, Retry.TERMINAL]) is Retry.TERMINAL
    assert retry_of_all([Retry.TERMINAL, Retry.TRANSIENT]) is Retry.TRANSIENT
