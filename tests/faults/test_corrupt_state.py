"""A corrupted state ConfigMap is named in one line with how to reset it, never a JSONDecodeError traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corpus import ENV, make_repo
from kubernetes import client

pytestmark = pytest.mark.cluster

CORRUPT = [
    pytest.param(
        "{not json",
        "inventory.json is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        id="not-json",
    ),
    pytest.param("[1, 2]", "inventory.json is not a JSON object", id="a-list"),
]


@pytest.mark.parametrize(("content", "problem"), CORRUPT)
def test_a_corrupt_inventory_is_named_with_its_reset(
    kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path, content: str, problem: str
) -> None:
    name = "gitsync.web.dev.inventory"
    body = {"metadata": {"name": name}, "data": {"inventory.json": content}}
    client.CoreV1Api(kube_api).create_namespaced_config_map(namespace, body)
    repo = make_repo(tmp_path, {f"{ENV}/env.yaml": f"namespace: {namespace}\napps: [web]\n"})
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("gitsync")),
            "sync",
            "--repo",
            str(repo),
            "--env",
            "dev",
            "--kubeconfig",
            str(kubelab.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: ConfigMap/{namespace}/{name}: {problem}; reset it with "
        f"`kubectl -n {namespace} delete configmap {name}` (the next sync writes it afresh)\n"
    )
    assert (
        client.CoreV1Api(kube_api).list_namespaced_config_map(namespace, field_selector="metadata.name=web").items == []
    )
