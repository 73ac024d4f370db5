"""Fixtures shared by every test directory: the kubelab control plane and a namespace per test.

- `kubelab` (session): one real cluster per pytest session, started only when a test asks for it, so unit tests
  never pay for it. Set KUBELAB_KUBECONFIG to the admin kubeconfig of a cluster started by hand
  (`python tools/kubelab/kubelab.py up --state-dir DIR`) to reuse it across runs. It never skips: a cluster test
  that cannot get a cluster fails and says why.
- `kubelab_b` (session): a second cluster for the multi-cluster tests, the same way (`KUBELAB_B_KUBECONFIG`).
- `kube_api` (session): a kubernetes ApiClient for the admin kubeconfig.
- `namespace` (function): a fresh namespace whose `default` ServiceAccount exists; deleted afterwards.
- `gitsync_image` (session): the reference of the agent image for the current tree, built by `make image`'s code
  path (`tools/image/image.py build`, cached: an unchanged tree reuses its image). It never skips either.

Tests under tests/cluster are marked `cluster`, tests under tests/e2e `e2e`, tests under tests/image `image`.
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

# fixtures: prometheus, metrics; installed; receiving; gitea, gitea_repo
pytest_plugins = ["prometheus_fixture", "deploylab", "notifylab", "forge_fixture"]

REPO = Path(__file__).resolve().parent.parent
KUBELAB = REPO / "tools" / "kubelab" / "kubelab.py"
IMAGE_TOOL = REPO / "tools" / "image" / "image.py"
TESTS = Path(__file__).resolve().parent
BUILD_ERROR = pytest.StashKey[str]()
IMAGE_BUILD = pytest.StashKey["Built"]()


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


@dataclass(frozen=True, slots=True)
class Built:
    """What a tool's `build` left: the last line of its stdout, or why it failed."""

    output: str
    error: str | None


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the tests that will run decide
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        top = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if top in ("cluster", "e2e", "image"):
            item.add_marker(top)
    # A cold build takes minutes; doing it here keeps it out of the first cluster test's timeout.
    wanted = {name for item in items for name in getattr(item, "fixturenames", ())}
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if ("kubelab" in wanted and not os.environ.get("KUBELAB_KUBECONFIG")) or (
            "kubelab_b" in wanted and not os.environ.get("KUBELAB_B_KUBECONFIG")
        ):
            error = build_tool("kubelab: checking the binaries (a first build takes several minutes)", KUBELAB).error
            if error:
                config.stash[BUILD_ERROR] = error
        if "gitsync_image" in wanted:
            config.stash[IMAGE_BUILD] = build_tool(
                "image: checking the agent image (a first build takes about 5 minutes)", IMAGE_TOOL
            )


def build_tool(note: str, tool: Path) -> Built:
    """Runs `tool build`, showing its progress (stderr) live; on failure the error holds its last lines."""
    print(f"\n{note}", flush=True)
    argv = [sys.executable, str(tool), "build"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as build:
        assert build.stdout is not None and build.stderr is not None
        lines = []
        for line in build.stderr:
            print(line, end="", flush=True)
            lines.append(line)
        output = build.stdout.read().strip().splitlines()
    if build.returncode == 0:
        return Built(output[-1] if output else "", None)
    return Built("", f"`{tool} build` failed with exit code {build.returncode}:\n" + "".join(lines[-20:]))


def _server_of(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])


def _kubelab(
    variable: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kubelab]:
    """The cluster named by ``$variable`` (reused, never stopped), or one started for the session and stopped."""
    reuse = os.environ.get(variable)
    if reuse:
        kubeconfig = Path(reuse).resolve()
        if not kubeconfig.is_file():
            pytest.fail(
                f"{variable}={reuse}: no such file; unset it or start kubelab with `{KUBELAB} up`",
                pytrace=False,
            )
        lab = Kubelab(kubeconfig, _server_of(kubeconfig), kubeconfig.parent)
        try:
            with config.new_client_from_config(str(kubeconfig)) as api:
                client.VersionApi(api).get_code(_request_timeout=5)
        except Exception as error:
            pytest.fail(
                f"{variable}={reuse}: {lab.server} does not answer ({error}); run `{KUBELAB} status`",
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
def kubelab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubelab]:
    yield from _kubelab("KUBELAB_KUBECONFIG", request, tmp_path_factory)


@pytest.fixture(scope="session")
def kubelab_b(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubelab]:
    """A second cluster (multi-cluster tests: prod's), started beside ``kubelab`` unless ``KUBELAB_B_KUBECONFIG``
    names a running one."""
    yield from _kubelab("KUBELAB_B_KUBECONFIG", request, tmp_path_factory)


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


@pytest.fixture(scope="session")
def gitsync_image(request: pytest.FixtureRequest) -> str:
    built = request.config.stash.get(IMAGE_BUILD, None) or build_tool("image: checking the agent image", IMAGE_TOOL)
    if built.error or not built.output:
        pytest.fail(built.error or f"`{IMAGE_TOOL} build` printed no image reference", pytrace=False)
    return built.output
