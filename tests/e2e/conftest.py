"""Fixtures for the agent-as-a-process tests; the helpers themselves are in ``agentlab``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentlab import Agents, Upstream
from kubernetes import client


@pytest.fixture
def upstream(tmp_path: Path, namespace: str) -> Upstream:
    return Upstream(tmp_path / "git", namespace)


@pytest.fixture
def agents(tmp_path: Path, kubelab: Any, upstream: Upstream) -> Iterator[Agents]:
    factory = Agents(tmp_path / "agents", kubelab.kubeconfig, upstream)
    yield factory
    factory.stop_all()


@pytest.fixture
def core(kube_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)
