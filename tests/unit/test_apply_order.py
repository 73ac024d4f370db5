"""Apply order: parents first, then waves, then kinds; later steps never start before earlier ones end."""

from __future__ import annotations

from typing import Any

from gitsync.apply import _steps
from gitsync.model import ANNOTATION_WAVE, Manifest, ObjectId
from gitsync.plan import PlanAction, PlannedChange


def change(kind: str, name: str, wave: int | None = None, group: str = "", namespace: str = "shop") -> PlannedChange:
    ref = ObjectId(group, kind, "" if kind in ("Namespace", "CustomResourceDefinition") else namespace, name)
    meta: dict[str, Any] = {"name": name}
    if wave is not None:
        meta["annotations"] = {ANNOTATION_WAVE: str(wave)}
    return PlannedChange(ref, PlanAction.CREATE, Manifest(ref, {"kind": kind, "metadata": meta}))


def test_steps_order_parents_waves_and_kinds() -> None:
    changes = [
        change("Deployment", "web", group="apps"),
        change("Job", "migrate", wave=-1, group="batch"),
        change("Widget", "w", group="example.com"),
        change("ConfigMap", "settings"),
        change("ConfigMap", "late", wave=2),
        change("Service", "web"),
        change("CustomResourceDefinition", "widgets.example.com", group="apiextensions.k8s.io"),
        change("Namespace", "shop"),
    ]
    steps = [[c.id.name for c in step] for step in _steps(changes)]
    assert steps == [
        ["shop"],
        ["widgets.example.com"],
        ["migrate"],
        ["settings"],
        ["web"],
        ["web"],
        ["w"],
        ["late"],
    ]
    kinds = [step[0].id.kind for step in _steps(changes)]
    assert kinds[4:6] == ["Service", "Deployment"]


def test_objects_of_one_kind_and_wave_share_a_step() -> None:
    changes = [change("ConfigMap", f"c{i}") for i in range(5)]
    assert [len(step) for step in _steps(changes)] == [5]
