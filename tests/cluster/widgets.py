"""A throwaway CRD for tests that need a custom kind: group per test, since CRDs are cluster-wide."""

from __future__ import annotations

from typing import Any


def widget_crd(group: str) -> dict[str, Any]:
    """A namespaced ``Widget`` kind in ``group`` that accepts any fields."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
