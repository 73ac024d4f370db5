"""The rendered change a promotion or rollback commit describes: what a person reading the commit would see."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PROD_TAG

from gitsync.model import Manifest, ObjectId
from gitsync.promote import RenderedChange, pin_change, promotion_message, rendered_change
from renderers import render_app
from renderers.promotion import Pin, load_pins


def deployment(name: str, *images: str, init: str = "") -> Manifest:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = [{"name": "init", "image": init}]
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"template": {"spec": spec}},
    }
    return Manifest(ObjectId.of(body), body)


def configmap(name: str, **data: str) -> Manifest:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": data}
    return Manifest(ObjectId.of(body), body)


def cronjob(image: str) -> Manifest:
    pod = {"containers": [{"name": "run", "image": image}]}
    body = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "shop"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}},
    }
    return Manifest(ObjectId.of(body), body)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ((), (), RenderedChange()),
        ((configmap("a", k="1"),), (configmap("a", k="1"),), RenderedChange()),
        (
            (configmap("a", k="1"), configmap("gone")),
            (configmap("a", k="2"), configmap("new"), deployment("web", "web:2")),
            RenderedChange(
                added=("ConfigMap/shop/new", "Deployment.apps/shop/web"),
                changed=("ConfigMap/shop/a",),
                removed=("ConfigMap/shop/gone",),
                images=(("", "web:2"),),
            ),
        ),
        (
            (deployment("web", "web:1", "proxy:1", init="migrate:1"), deployment("api", "web:1"), cronjob("job:1")),
            (deployment("web", "web:2", "proxy:1", init="migrate:2"), deployment("api", "web:2"), cronjob("job:1")),
            RenderedChange(
                changed=("Deployment.apps/shop/api", "Deployment.apps/shop/web"),
                images=(("migrate:1", "migrate:2"), ("web:1", "web:2")),
            ),
        ),
        (
            (cronjob("job:1"),),
            (cronjob("job:2"),),
            RenderedChange(changed=("CronJob.batch/shop/nightly",), images=(("job:1", "job:2"),)),
        ),
    ],
    ids=["nothing", "same", "added-changed-removed", "images-once-per-change", "cronjob"],
)
def test_objects_by_id_and_images_by_container(
    before: tuple[Manifest, ...], after: tuple[Manifest, ...], expected: RenderedChange
) -> None:
    assert rendered_change(before, after) == expected


def test_promoted_values_are_compared_path_by_path() -> None:
    change = rendered_change(
        (),
        (),
        {"image": {"tag": "1.0"}, "config": {"A": "1", "B": "2"}, "replicas": 2},
        {"image": {"tag": "1.1"}, "config": {"A": "1"}, "replicas": 3},
    )
    assert change.values == (("config.B", "2", ""), ("image.tag", "1.0", "1.1"), ("replicas", "2", "3"))


def test_a_secret_is_named_and_its_content_never_shown() -> None:
    def secret(value: str) -> Manifest:
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}}
        return Manifest(ObjectId.of(body), {**body, "stringData": {"password": value}})

    change = rendered_change((secret("hunter2"),), (secret("s3cret!"),))
    message = promotion_message("shop", "prod", "staging@" + "a" * 40, change, digest="", evidence="Succeeded")
    assert "changed: Secret/shop/db" in message
    assert "hunter2" not in message and "s3cret!" not in message


def test_pin_change_renders_the_receiving_environment_before_and_after(
    pinned_example: tuple[Path, Callable[[str], Path]],
) -> None:
    root, trees = pinned_example
    current = load_pins(root, "prod")["podinfo"]
    newer = Pin("podinfo", current.revision, "staging", {"image": {"tag": "6.7.1"}})
    change = pin_change(root, "prod", "podinfo", newer, trees)
    assert change.values == (("image.tag", PROD_TAG, "6.7.1"),)
    ((before, after),) = change.images
    assert before.endswith(f":{PROD_TAG}") and after.endswith(":6.7.1")
    every = tuple(str(m.id) for m in render_app(root, "prod", "podinfo", trees=trees, pin=newer).manifests)
    assert "Deployment.apps/podinfo-prod/podinfo" in every
    assert change.changed == every, "podinfo's version label carries the tag"
    assert not change.added and not change.removed
    assert pin_change(root, "prod", "podinfo", current, trees) == RenderedChange(), "the same pin changes nothing"

    (root / "environments/prod/promoted.yaml").unlink()
    first = pin_change(root, "prod", "podinfo", newer, trees)
    assert first.added == every and not first.changed, "a first pin adds everything"
    assert first.values == (("image.tag", "", "6.7.1"),)
