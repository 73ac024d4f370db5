"""Helpers to run the agent as a process: a real bare Git repository made from example-repo, real HTTP on
127.0.0.1, kubelab. Used by tests/e2e and by tests/cluster/test_deploy.py.

- ``Upstream``: a bare repo plus a working clone holding example-repo, with the staging environment pointed at
  the test's namespace; ``commit`` edits files and pushes.
- ``Agents``: starts ``gitsync run --config ...`` processes (stopped at the end, by pid), with helpers to send
  signed webhooks and to read their JSON log lines and metrics;
- the fixtures ``upstream``, ``agents``, ``core`` and ``prod_namespace``, registered by the conftest of each folder
  that runs agents (tests/e2e, tests/faults).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gitsync.runtime.webhooks import sign

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "example-repo"
GITSYNC = Path(sys.executable).with_name("gitsync")
SECRET = b"e2e-webhook-secret"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Upstream:
    """The Git server side: a bare repository, and a clone that commits and pushes to it."""

    def __init__(self, root: Path, namespace: str, strategy: str = "rolling") -> None:
        self.bare = root / "upstream.git"
        self.work = root / "work"
        self.url = f"file://{self.bare}"
        root.mkdir(parents=True, exist_ok=True)
        self._git(root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        shutil.copytree(EXAMPLE, self.work)
        self._git(self.work, "init", "-q", "-b", "main")
        self._git(self.work, "remote", "add", "origin", str(self.bare))
        env_file = self.work / "environments/staging/env.yaml"
        env_file.write_text(env_file.read_text().replace("namespace: podinfo-staging", f"namespace: {namespace}"))
        self.set_rollout(strategy)
        self.commit("Initial import of example-repo")

    def set_rollout(self, strategy: str, **settings: Any) -> None:
        """Set staging's ``rollout`` values (not committed): ``rolling`` keeps agent tests about the agent; the
        canary test passes shorter steps."""
        path = self.work / "environments/staging/values/podinfo.yaml"
        values = yaml.safe_load(path.read_text())
        values["rollout"] = {"strategy": strategy, **settings}
        path.write_text(yaml.safe_dump(values))

    def add_app(self, name: str) -> str:
        """Copy podinfo's chart and staging values as app ``name`` and list it in staging too; commit and push."""
        shutil.copytree(self.work / "apps/podinfo", self.work / "apps" / name)
        chart = self.work / "apps" / name / "chart.yaml"
        chart.write_text(chart.read_text().replace("name: podinfo", f"name: {name}"))
        values = self.work / "environments/staging/values"
        shutil.copy(values / "podinfo.yaml", values / f"{name}.yaml")
        apps = yaml.safe_load((self.work / "environments/staging/env.yaml").read_text())["apps"]
        return self.set_environment(f"Add {name} to staging", apps=[*apps, name])

    def set_environment(self, message: str, **settings: Any) -> str:
        """Set top-level keys of staging's env.yaml (``apps``, ``prune``...); commit and push."""
        path = self.work / "environments/staging/env.yaml"
        environment = {**yaml.safe_load(path.read_text()), **settings}
        return self.commit(message, {str(path.relative_to(self.work)): yaml.safe_dump(environment)})

    def _git(self, cwd: Path, *args: str) -> str:
        env = {**os.environ, **IDENTITY, "HOME": str(cwd)}
        done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def commit(
        self, message: str, files: dict[str, str] | None = None, push: bool = True, sign_with: list[str] | None = None
    ) -> str:
        """Write ``files``, commit (signed when ``sign_with`` holds git ``-c`` options) and push."""
        for name, text in (files or {}).items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._git(self.work, "add", "-A")
        self._git(self.work, *(sign_with or []), "commit", "-q", "--allow-empty", "-m", message)
        if push:
            self.push()
        return self._git(self.work, "rev-parse", "HEAD")

    def push(self) -> None:
        self._git(self.work, "push", "-q", "--force", "origin", "main")

    def set_message(self, message: str, push: bool = True) -> str:
        """Change the podinfo ConfigMap's PODINFO_UI_MESSAGE in staging (the value tests watch)."""
        path = self.work / "environments/staging/values/podinfo.yaml"
        values = yaml.safe_load(path.read_text())
        values["config"]["PODINFO_UI_MESSAGE"] = message
        return self.commit(f"Say {message}", {str(path.relative_to(self.work)): yaml.safe_dump(values)}, push=push)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, "") while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


class AgentProcess:
    def __init__(self, name: str, root: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        self.name = name
        self.port = int(config["listen"].rpartition(":")[2])
        self.config_path = root / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = root / f"{name}.log"
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [str(GITSYNC), "run", "--config", str(self.config_path), "--log-format", "json"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._env},
            )
        wait_for(f"{self.name} /healthz", lambda: self.get("/healthz")[0] == 200 or self._died(), 60)
        return self

    def _died(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
        return False

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def webhook(self, body: bytes, secret: bytes = SECRET, provider: str = "github") -> int:
        headers = {"Content-Type": "application/json"}
        if provider == "github":
            headers |= {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sign(secret, body)}"}
        else:
            headers |= {"X-Gitsync-Signature": f"sha256={sign(secret, body)}"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/{provider}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def push_webhook(self, revision: str, secret: bytes = SECRET) -> int:
        return self.webhook(json.dumps({"ref": "refs/heads/main", "after": revision}).encode(), secret)

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if event is None or record.get("event") == event:
                lines.append(record)
        return lines

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` (all label sets)."""
        status, text = self.get("/metrics")
        assert status == 200
        return sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#") and line[len(name)] in "{ "
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Agents:
    """Factory for agent processes sharing one upstream and kubelab; all are killed at teardown."""

    def __init__(self, root: Path, kubeconfig: Path, upstream: Upstream) -> None:
        self.root = root
        self.kubeconfig = kubeconfig
        self.upstream = upstream
        self.started: list[AgentProcess] = []
        root.mkdir(parents=True, exist_ok=True)
        (root / "secret").write_bytes(SECRET)

    def start(self, name: str = "agent", env: dict[str, str] | None = None, **overrides: Any) -> AgentProcess:
        config: dict[str, Any] = {
            "repo": {"url": self.upstream.url, "branch": "main"},
            "environments": ["staging"],
            "pollInterval": "1s",
            "driftInterval": "10m",
            "webhooks": {"github": {"secretFile": str(self.root / "secret")}},
            "listen": f"127.0.0.1:{free_port()}",
            "kubeconfig": str(self.kubeconfig),
            "cacheDir": str(self.root / f"cache-{name}"),
            **overrides,
        }
        agent = AgentProcess(name, self.root, config, env or {})
        self.started.append(agent)
        return agent.start()

    def stop_all(self) -> None:
        for agent in self.started:
            agent.kill(signal.SIGTERM)


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


@pytest.fixture
def prod_namespace(namespace: str, core: client.CoreV1Api) -> Iterator[str]:
    """A second namespace for prod (staging's is ``namespace``), deleted at the end."""
    name = f"{namespace}-prod"
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as e:
        if e.status != 404:
            raise


def service_account_token(kube_api: client.ApiClient, name: str, namespace: str) -> str:
    """A fresh token for ServiceAccount ``namespace/name`` (TokenRequest), as the kubelet would mount it."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    return str(
        client.CoreV1Api(kube_api).create_namespaced_service_account_token(name, namespace, request).status.token
    )


def configmap_value(
    core: client.CoreV1Api, namespace: str, name: str = "podinfo", key: str = "PODINFO_UI_MESSAGE"
) -> str | None:
    try:
        data = core.read_namespaced_config_map(name, namespace).data or {}
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return data.get(key)


def status_of(core: client.CoreV1Api, namespace: str, app: str = "podinfo", env: str = "staging") -> dict[str, Any]:
    try:
        data = core.read_namespaced_config_map(f"gitsync.{app}.{env}.status", namespace).data or {}
    except client.ApiException as e:
        if e.status == 404:
            return {}
        raise
    return dict(json.loads(data.get("status.json", "{}")))


def event_reasons(core: client.CoreV1Api, namespace: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in core.list_namespaced_event(namespace).items]


def settled(core: client.CoreV1Api, namespace: str, revision: str = "", timeout: float = 60) -> dict[str, Any]:
    """Wait until the status says Succeeded (at ``revision`` if given); the status document."""

    def check() -> dict[str, Any] | None:
        status = status_of(core, namespace)
        ok = status.get("result") == "Succeeded" and (not revision or status.get("lastAppliedRevision") == revision)
        return status if ok else None

    return dict(wait_for(f"status Succeeded{f' at {revision[:12]}' if revision else ''}", check, timeout))
