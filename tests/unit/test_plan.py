"""Pure parts of the plan: what counts as drift, and what a diff may show."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gitsync import memo as memo_module
from gitsync.memo import DryRunMemo
from gitsync.model import Manifest, ObjectId
from gitsync.normalise import MASK, diff_text, ignored_pointers, mask_secret, normalise
from gitsync.plan import Plan, PlanAction, PlannedChange

LIVE: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "0d6c",
        "resourceVersion": "812",
        "generation": 4,
        "creationTimestamp": "2026-11-21T10:00:00Z",
        "managedFields": [{"manager": "gitsync"}],
        "annotations": {
            "deployment.kubernetes.io/revision": "4",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        "labels": {"app": "web"},
    },
    "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "web:1"}]}}},
    "status": {"readyReplicas": 3},
}


WEB = ObjectId("apps", "Deployment", "shop", "web")
WEB_MANIFEST = Manifest(WEB, {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 3}})
"""The desired side of ``LIVE``, for the memo tests."""


def test_normalise_strips_server_owned_fields_only() -> None:
    assert normalise(LIVE) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "web:1"}]}}},
    }
    assert LIVE["metadata"]["uid"] == "0d6c", "normalise must not modify its input"
    assert normalise(None) == {}


@pytest.mark.parametrize(
    ("pointers", "gone", "kept"),
    [
        (["/spec/replicas"], ("spec", "replicas"), ("spec", "template")),
        (["/metadata/labels/app"], ("metadata", "labels"), ("metadata", "name")),
        (["/spec/template/spec/containers/0/image"], None, ("spec", "replicas")),
        (["/no/such/path", "relative/ignored"], None, ("spec", "replicas")),
    ],
)
def test_normalise_removes_ignored_pointers(
    pointers: list[str], gone: tuple[str, str] | None, kept: tuple[str, str]
) -> None:
    out = normalise(LIVE, pointers)
    if gone is not None:
        parent = out[gone[0]]
        assert gone[1] not in parent or parent[gone[1]] == {}
    assert kept[1] in out[kept[0]]


def test_ignored_pointer_inside_a_list() -> None:
    out = normalise(LIVE, ["/spec/template/spec/containers/0/image"])
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "c"}]


def test_ignore_annotation_is_comma_or_newline_separated() -> None:
    obj = {"metadata": {"annotations": {"gitsync.dev/ignore-differences": "/spec/replicas, /data/a\n/data/b"}}}
    assert ignored_pointers(obj) == ("/spec/replicas", "/data/a", "/data/b")
    assert ignored_pointers({"metadata": {}}) == ()


def secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_secret_values_never_appear_in_a_diff_but_changes_do() -> None:
    ref = ObjectId("", "Secret", "shop", "db")
    before, after = secret(password="hunter2", user="admin"), secret(password="correct horse", user="admin")
    text = diff_text(ref, before, after)
    for value in ("hunter2", "correct horse", "admin"):
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text
    changed = [line for line in text.splitlines() if line.startswith(("+ ", "- ", "+  ", "-  "))]
    assert any("password" in line for line in changed), "a changed value must show as a changed line"
    assert not any("user" in line for line in changed), "an unchanged value must not"
    assert MASK in text


def test_string_data_and_data_hash_alike() -> None:
    as_data = mask_secret(secret(token="abc"))
    as_string = mask_secret({**secret(), "data": None, "stringData": {"token": "abc"}})
    assert as_data["data"]["token"] == as_string["stringData"]["token"]


def test_mask_leaves_other_kinds_alone() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"password": "visible"}}
    assert mask_secret(cm) is cm


def test_diff_looks_like_kubectl_diff() -> None:
    ref = ObjectId("apps", "Deployment", "shop", "web")
    after = normalise({**LIVE, "spec": {**LIVE["spec"], "replicas": 5}})
    text = diff_text(ref, normalise(LIVE), after)
    assert text.startswith("--- live/Deployment.apps/shop/web\n+++ desired/Deployment.apps/shop/web\n")
    assert "-  replicas: 3\n" in text
    assert "+  replicas: 5\n" in text
    assert diff_text(ref, normalise(LIVE), normalise(LIVE)) == ""


def test_plan_summary_counts_each_action() -> None:
    def change(action: PlanAction, name: str) -> PlannedChange:
        ref = ObjectId("", "ConfigMap", "shop", name)
        return PlannedChange(ref, action, Manifest(ref, {}))

    plan = Plan(
        (
            change(PlanAction.CREATE, "a"),
            change(PlanAction.CREATE, "b"),
            change(PlanAction.UPDATE, "c"),
            change(PlanAction.UNCHANGED, "d"),
            change(PlanAction.DELETE, "e"),
        )
    )
    assert plan.summary() == "2 to create, 1 to change, 1 to delete, 1 unchanged"
    assert plan.has_changes
    assert not Plan((change(PlanAction.UNCHANGED, "d"),)).has_changes


def test_memo_survives_status_writes_but_not_content_changes() -> None:
    ref, manifest = WEB, WEB_MANIFEST
    memo = DryRunMemo()
    memo.remember(ref, manifest, LIVE)

    status_only = {**LIVE, "status": {"readyReplicas": 1}, "metadata": {**LIVE["metadata"], "resourceVersion": "9"}}
    assert memo.unchanged(ref, manifest, status_only), "a controller writing status is not a reason to dry-run"
    relabelled = {**LIVE, "metadata": {**LIVE["metadata"], "labels": {"app": "other"}, "resourceVersion": "10"}}
    assert not memo.unchanged(ref, manifest, relabelled)
    edited = Manifest(ref, {**manifest.body, "spec": {"replicas": 4}})
    assert not memo.unchanged(ref, edited, LIVE)

    restored = DryRunMemo(memo.export([ref]))
    assert restored.unchanged(ref, manifest, LIVE), "the memo round-trips through the inventory"
    assert memo.export([]) == {}


def test_memo_trusts_an_unmoved_resource_version_without_hashing_live(monkeypatch: pytest.MonkeyPatch) -> None:
    ref, manifest = WEB, WEB_MANIFEST
    memo = DryRunMemo()
    memo.remember(ref, manifest, LIVE)
    normalised: list[object] = []
    monkeypatch.setattr(memo_module, "normalise", lambda obj, ignore=(): normalised.append(obj) or normalise(obj))

    assert memo.unchanged(ref, manifest, LIVE)
    assert normalised == [], "the live object is still at the remembered resourceVersion: nothing to hash"

    exported = memo.export([ref])
    status_only = {**LIVE, "status": {"readyReplicas": 1}, "metadata": {**LIVE["metadata"], "resourceVersion": "9"}}
    assert memo.unchanged(ref, manifest, status_only)
    assert len(normalised) == 1, "a moved resourceVersion is checked by content"
    assert memo.unchanged(ref, manifest, status_only)
    assert len(normalised) == 1, "and its new resourceVersion remembered"
    assert memo.export([ref]) == exported, "in this process only: a no-op sync writes no inventory"

    edited = {**LIVE, "spec": {"replicas": 5}, "metadata": {**LIVE["metadata"], "resourceVersion": "11"}}
    assert not memo.unchanged(ref, manifest, edited), "a write to the spec is never hidden by the memo"
    assert not memo.unchanged(ref, Manifest(ref, {**manifest.body, "spec": {"replicas": 4}}), LIVE)


def test_memo_reads_entries_written_without_a_resource_version() -> None:
    ref, manifest = WEB, WEB_MANIFEST
    written = DryRunMemo()
    written.remember(ref, manifest, LIVE)
    entry = written.export([ref])[str(ref)]
    manifest_hash, live_hash, version, generation, _ = entry.split(":")
    assert (version, generation) == ("812", "4")
    older = f"{manifest_hash}:{live_hash}"  # as the first releases wrote entries
    old = DryRunMemo({str(ref): older})

    assert old.unchanged(ref, manifest, LIVE)
    assert old.export([ref]) == {str(ref): f"{older}:812"}, "upgraded, to be saved with the next inventory write"
    relabelled = {**LIVE, "metadata": {**LIVE["metadata"], "labels": {"app": "other"}, "resourceVersion": "10"}}
    assert not DryRunMemo({str(ref): older}).unchanged(ref, manifest, relabelled)
    assert not DryRunMemo({str(ref): f"{older}:812"}).unchanged_meta(ref, manifest, meta_of(LIVE, resourceVersion="9"))


def test_memo_never_holds_secrets() -> None:
    ref = ObjectId("", "Secret", "shop", "db")
    manifest = Manifest(ref, secret(password="hunter2"))
    memo = DryRunMemo()
    memo.remember(ref, manifest, secret(password="hunter2"))
    assert not memo.unchanged(ref, manifest, secret(password="hunter2"))
    assert memo.export([ref]) == {}


def meta_of(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The object as a metadata list returns it (PartialObjectMetadata), with ``changes`` to its metadata."""
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {**obj["metadata"], **changes}}


CONFIGMAP: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "70", "labels": {"app": "web"}},
    "data": {"k": "v"},
}


def test_memo_from_metadata_alone_needs_the_remembered_resource_version() -> None:
    ref = ObjectId("", "ConfigMap", "shop", "web")
    manifest = Manifest(ref, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}})
    memo = DryRunMemo()
    memo.remember(ref, manifest, CONFIGMAP)
    assert memo.unchanged_meta(ref, manifest, meta_of(CONFIGMAP))
    assert not memo.unchanged_meta(ref, manifest, meta_of(CONFIGMAP, resourceVersion="71")), "content must decide"
    assert memo.unchanged(ref, manifest, {**CONFIGMAP, "metadata": {**CONFIGMAP["metadata"], "resourceVersion": "71"}})
    assert memo.unchanged_meta(ref, manifest, meta_of(CONFIGMAP, resourceVersion="71")), "decided once: known now"
    assert not memo.unchanged_meta(ref, manifest, None), "not there any more"
    assert not memo.unchanged_meta(ref, Manifest(ref, {**manifest.body, "data": {}}), meta_of(CONFIGMAP))
    assert not memo.unchanged_meta(ObjectId("", "ConfigMap", "shop", "other"), manifest, meta_of(CONFIGMAP))


def test_memo_settles_a_workload_whose_status_moved_from_its_generation_and_metadata() -> None:
    ref, manifest = WEB, WEB_MANIFEST
    memo = DryRunMemo()
    memo.remember(ref, manifest, LIVE)
    restored = DryRunMemo(memo.export([ref]))  # as a new `gitsync diff` reads it from the inventory
    assert restored.unchanged_meta(ref, manifest, meta_of(LIVE, resourceVersion="900")), "status moved: same gen"
    assert not restored.unchanged_meta(ref, manifest, meta_of(LIVE, resourceVersion="901", generation=5)), "spec"
    relabelled = meta_of(LIVE, resourceVersion="902", labels={"app": "other"})
    assert not restored.unchanged_meta(ref, manifest, relabelled), "a metadata edit is seen in the metadata"
    noted = meta_of(LIVE, resourceVersion="903", annotations={**LIVE["metadata"]["annotations"], "team": "x"})
    assert not restored.unchanged_meta(ref, manifest, noted)
    server_noted = meta_of(
        LIVE,
        resourceVersion="904",
        annotations={**LIVE["metadata"]["annotations"], "deployment.kubernetes.io/revision": "5"},
    )
    assert restored.unchanged_meta(ref, manifest, server_noted), "annotations the server owns are not content"

    config = ObjectId("", "ConfigMap", "shop", "web")  # no generation: a moved ConfigMap is decided by content
    config_manifest = Manifest(config, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}})
    memo.remember(config, config_manifest, {**CONFIGMAP, "metadata": {**CONFIGMAP["metadata"], "generation": 1}})
    assert not memo.unchanged_meta(config, config_manifest, meta_of(CONFIGMAP, resourceVersion="99", generation=1))


def test_settled_memo_exports_the_resource_version_found_by_content() -> None:
    ref, manifest = WEB, WEB_MANIFEST
    memo = DryRunMemo()
    memo.remember(ref, manifest, LIVE)
    status_only = {**LIVE, "status": {"readyReplicas": 1}, "metadata": {**LIVE["metadata"], "resourceVersion": "813"}}
    assert memo.unchanged(ref, manifest, status_only)
    before = memo.export([ref])
    assert before[str(ref)].split(":")[2] == "812", "a no-op keeps the stored entry: nothing to write"
    memo.settle()
    after = memo.export([ref])
    assert after[str(ref)].split(":")[2] == "813"
    assert after[str(ref)].split(":")[3:] == before[str(ref)].split(":")[3:], "the same content: generation kept"
    assert DryRunMemo(after).unchanged_meta(ref, manifest, meta_of(LIVE, resourceVersion="813", generation=9))
