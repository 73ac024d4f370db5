"""Fixtures shared by every test directory: the kubelab control plane and a namespace per test.

- `kubelab` (session): one real cluster per pytest session, started only when a test asks for it, so unit tests
  never pay for it. Set KUBELAB_KUBECONFIG to the admin kubeconfig of a cluster started by hand
  (`python tools/kubelab/kubelab.py up --state-dir DIR`) to reuse it across runs. It never skips: a cluster test
  that cannot get a cluster fails and says why.
- `kube_api` (session): a kubernetes ApiClient for the admin kubeconfig.
- `namespace` (function): a fresh namespace whose `default` ServiceAccount exists; deleted afterwards.

Tests under tests/cluster are marked `cluster`, tests under tests/e2e `e2e`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

pytest_plugins = ["prometheus_fixture", "deploylab"]  # fixtures: prometheus, metrics; installed

REPO = Path(__file__).resolve().parent.parent
KUBELAB = REPO / "tools" / "kubelab" / "kubelab.py"
TESTS = Path(__file__).resolve().parent
BUILD_ERROR = pytest.StashKey[str]()


@dataclass(frozen=True, slots=True)
class Kubelab:
    """A running kubelab cluster: pass `kubeconfig` explicitly to whatever talks to it."""

    kubeconfig: Path
    server: str
    state_dir: Path


def run_kubelab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(KUBELAB), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the tests that will run decide
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        top = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if top in ("cluster", "e2e"):
            item.add_marker(top)
    # A cold build takes minutes; doing it here keeps it out of the first cluster test's timeout.
    wants_cluster = any("kubelab" in getattr(item, "fixturenames", ()) for item in items)
    if wants_cluster and not os.environ.get("KUBELAB_KUBECONFIG"):
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            error = build_kubelab()
        if error:
            config.stash[BUILD_ERROR] = error


def build_kubelab() -> str | None:
    """Runs `kubelab.py build`, showing its progress live; returns its last lines when it fails."""
    print("\nkubelab: checking the binaries (a first build takes several minutes)", flush=True)
    argv = [sys.executable, str(KUBELAB), "build"]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as build:
        assert build.stderr is not None
        lines = []
        for line in build.stderr:
            print(line, end="", flush=True)
            lines.append(line)
    if build.returncode == 0:
        return None
    return f"`{KUBELAB} build` failed with exit code {build.returncode}:\n" + "".join(lines[-20:])


def _server_of(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])


@pytest.fixture(scope="session")
def kubelab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubelab]:
    reuse = os.environ.get("KUBELAB_KUBECONFIG")
    if reuse:
        kubeconfig = Path(reuse).resolve()
        if not kubeconfig.is_file():
            pytest.fail(
                f"KUBELAB_KUBECONFIG={reuse}: no such file; unset it or start kubelab with `{KUBELAB} up`",
                pytrace=False,
            )
        lab = Kubelab(kubeconfig, _server_of(kubeconfig), kubeconfig.parent)
        try:
            with config.new_client_from_config(str(kubeconfig)) as api:
                client.VersionApi(api).get_code(_request_timeout=5)
        except Exception as error:
            pytest.fail(
                f"KUBELAB_KUBECONFIG={reuse}: {lab.server} does not answer ({error}); run `{KUBELAB} status`",
                pytrace=False,
            )
        yield lab
        return
    build_error = request.config.stash.get(BUILD_ERROR, None)
    if build_error:
        pytest.fail(build_error, pytrace=False)
    state_dir = tmp_path_factory.mktemp("kubelab")
    started = run_kubelab("up", "--state-dir", str(state_dir), timeout=280)
    if started.returncode != 0:
        run_kubelab("down", "--state-dir", str(state_dir), timeout=60)
        pytest.fail(
            f"kubelab did not start (exit {started.returncode}); logs in {state_dir / 'logs'}\n{started.stderr}",
            pytrace=False,
        )
    kubeconfig = Path(started.stdout.strip().splitlines()[-1])
    try:
        yield Kubelab(kubeconfig, _server_of(kubeconfig), state_dir)
    finally:
        stopped = run_kubelab("down", "--state-dir", str(state_dir), timeout=60)
        if stopped.returncode != 0:
            print(f"kubelab: down failed: {stopped.stderr}", file=sys.stderr)


@pytest.fixture(scope="session")
def kube_api(kubelab: Kubelab) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(kubelab.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(kube_api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """Named after the test so leftovers are traceable; pods may be created as soon as this yields."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name, "labels": {"gitsync.dev/test": "true"}}})
    # The controller-manager fills a new namespace with these two; waiting for both keeps their late arrival out
    # of the tests' watches and lists.
    deadline = time.monotonic() + 30
    for what, read in (
        ("the `default` ServiceAccount", lambda: core.read_namespaced_service_account("default", name)),
        ("the `kube-root-ca.crt` ConfigMap", lambda: core.read_namespaced_config_map("kube-root-ca.crt", name)),
    ):
        while True:
            try:
                read()
                break
            except ApiException as error:
                if error.status != 404:
                    raise
                if time.monotonic() > deadline:
                    pytest.fail(f"Namespace/{name}: no {what} after 30s (kube-controller-manager down?)")
            time.sleep(0.1)
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as error:
        if error.status != 404:
            raise
