"""The judge of creates: it vouches only for what it can prove the server accepts, and sends the rest to a
server-side dry-run. A row that says ``False`` is an object that is dry-run, never one that is refused here."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gitsync.errors import ForbiddenError, KindNotServedError
from gitsync.judge import Judge
from gitsync.model import Json, Manifest, ObjectId
from gitsync.ports import ObjectList

NS = "shop"


def crd(schema: Json, **spec: Any) -> Json:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
            **spec,
        },
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    }


SCHEMA: Json = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "colour": {"type": "string", "enum": ["red", "blue"]},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "port": {"x-kubernetes-int-or-string": True},
            },
        }
    },
}


class FakeCluster:
    """What the judge reads: lists by kind, namespaces, and access reviews; ``denied`` verbs are refused."""

    def __init__(self, **lists: list[Json]) -> None:
        self.lists = {"CustomResourceDefinition": [crd(SCHEMA)], **lists}
        self.namespaces: dict[str, str] = {NS: "Active"}
        self.denied: set[str] = set()
        self.unreadable: set[str] = set()
        self.reviews = 0

    def list(self, group: str, kind: str, namespace: str = "", *, metadata_only: bool = False) -> ObjectList:
        if kind in self.unreadable:
            raise ForbiddenError(f"{kind}: forbidden")
        if kind == "MutatingAdmissionPolicy":
            raise KindNotServedError("MutatingAdmissionPolicy: kind is not served")
        return ObjectList(tuple(self.lists.get(kind, [])), "1")

    def get(self, ref: ObjectId) -> Json | None:
        phase = self.namespaces.get(ref.name)
        return None if phase is None else {"metadata": {"name": ref.name}, "status": {"phase": phase}}

    def create(self, body: Json, *, dry_run: bool = False) -> Json:
        self.reviews += 1
        return {"status": {"allowed": body["spec"]["resourceAttributes"]["verb"] not in self.denied}}


def configmap(**changes: Any) -> Json:
    body: Json = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": NS, "labels": {"gitsync.dev/app": "web"}},
        "data": {"a.conf": "x"},
    }
    for path, value in changes.items():
        node = body
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return body


def widget(**spec: Any) -> Json:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": NS},
        "spec": {"size": 3, **spec},
    }


def judged(body: Json, cluster: FakeCluster | None = None) -> bool:
    return Judge(cluster or FakeCluster()).accepts(Manifest(ObjectId.of(body), body))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (configmap(), True),
        (configmap(immutable=True, binaryData={}), True),
        (configmap(data={"bad key": "x"}), False),
        (configmap(data={"..": "x"}), False),
        (configmap(data={"n": 1}), False),
        (configmap(data={"big": "x" * (1024 * 1024 + 1)}), False),
        (configmap(data={"a": "x"}, binaryData={"a": "eA=="}), False),
        (configmap(metadata__name="Web"), False),
        (configmap(metadata__labels={"app": "x" * 64}), False),
        (configmap(metadata__labels={"a/b/c": "x"}), False),
        (configmap(metadata__annotations={"note": "x" * (256 * 1024)}), False),
        (configmap(metadata__finalizers=["example.com/keep"]), False),
        (configmap(unknown={"x": 1}), False),
        (configmap(apiVersion="v2"), False),
        (widget(), True),
        (widget(colour="red", tags=["a", "bb"], extra={"any": {"thing": 1}}, port="http"), True),
        (widget(size="3"), False),
        (widget(size=11), False),
        (widget(size=True), False),
        (widget(colour="green"), False),
        (widget(tags=["toolong"]), False),
        (widget(unknown=1), False),
        ({**widget(), "spec": {}}, False),
        ({**widget(), "apiVersion": "example.com/v2"}, False),
        ({**widget(), "metadata": {"name": "w"}}, False),
    ],
)
def test_only_what_is_proven_acceptable_skips_the_dry_run(body: Json, accepted: bool) -> None:
    assert judged(body) is accepted


@pytest.mark.parametrize(
    "keyword",
    [
        {"x-kubernetes-validations": [{"rule": "self.size > 1"}]},
        {"pattern": "^[a-z]+$"},
        {"format": "date-time"},
        {"x-kubernetes-list-type": "set"},
        {"oneOf": [{"required": ["size"]}]},
    ],
)
def test_a_schema_with_rules_the_judge_does_not_evaluate_sends_objects_to_the_server(keyword: Json) -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["spec"]["properties"]["tags"].update(keyword)
    cluster = FakeCluster(CustomResourceDefinition=[crd(schema)])
    assert judged(widget(), cluster)  # the field with the rule is not set
    assert not judged(widget(tags=["a"]), cluster)
    schema["properties"]["spec"]["properties"]["tags"]["default"] = ["a"]  # the server fills it in, and checks it
    assert not judged(widget(), FakeCluster(CustomResourceDefinition=[crd(schema)]))


def rule(*resources: str, groups: tuple[str, ...] = ("",), operations: tuple[str, ...] = ("CREATE",)) -> Json:
    return {"apiGroups": list(groups), "apiVersions": ["*"], "operations": list(operations), "resources": resources}


@pytest.mark.parametrize(
    ("facts", "accepted"),
    [
        ({}, True),
        ({"ValidatingWebhookConfiguration": [{"webhooks": [{"rules": [rule("configmaps")]}]}]}, False),
        ({"MutatingWebhookConfiguration": [{"webhooks": [{"rules": [rule("*", groups=("*",))]}]}]}, False),
        ({"ValidatingWebhookConfiguration": [{"webhooks": [{"rules": [rule("secrets")]}]}]}, True),
        (
            {
                "ValidatingWebhookConfiguration": [
                    {"webhooks": [{"rules": [rule("configmaps", operations=("DELETE",))]}]}
                ]
            },
            True,
        ),
        (
            {"ValidatingAdmissionPolicy": [{"spec": {"matchConstraints": {"resourceRules": [rule("configmaps")]}}}]},
            False,
        ),
        ({"ValidatingAdmissionPolicy": [{"spec": {}}]}, False),
        ({"ResourceQuota": [{"metadata": {"name": "q"}}]}, False),
    ],
)
def test_admission_that_may_intercept_the_kind_sends_it_to_the_server(
    facts: dict[str, list[Json]], accepted: bool
) -> None:
    assert judged(configmap(), FakeCluster(**facts)) is accepted


def test_missing_permissions_namespaces_and_unreadable_facts_send_objects_to_the_server() -> None:
    cluster = FakeCluster()
    cluster.denied = {"patch"}
    assert not judged(configmap(), cluster)
    cluster = FakeCluster()
    cluster.namespaces[NS] = "Terminating"
    assert not judged(configmap(), cluster)
    assert not judged(configmap(metadata__namespace="elsewhere"))
    cluster = FakeCluster()
    cluster.unreadable = {"ValidatingWebhookConfiguration"}
    assert not judged(configmap(), cluster)


def test_facts_are_read_once_per_sync() -> None:
    cluster = FakeCluster()
    judge = Judge(cluster)  # type: ignore[arg-type]
    for n in range(50):
        body = configmap(metadata__name=f"cm-{n}")
        assert judge.accepts(Manifest(ObjectId.of(body), body))
    assert cluster.reviews == 2  # create and patch, for configmaps in this namespace
