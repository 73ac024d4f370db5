"""The dashboard in a real browser (the system Chromium driven by Playwright), with the agent running example-repo
on kubelab: one agent run, staging as a canary and prod promoted from it, seen as a person would see it.

- the agent-served dashboard refuses a request without a token (401) and a ServiceAccount without the right to
  read the state ConfigMaps (403), and shows everything to one bound to a Role that grants it;
- the grid shows both environments; a canary's current step moves on screen with no reload (server-sent events);
  a promotion appears in the chain; a crash-looping release shows as rolled back with its failed check and value;
- the grid works at phone width; ``gitsync dashboard --repo`` serves the same on 127.0.0.1;
- a Secret's value, planted in the chart, is in no page and no event stream.
Screenshots go to the test's tmp dir (``screenshots/``).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from agentlab import GITSYNC, Agents, Upstream, free_port, service_account_token, status_of, wait_for
from kubernetes import client

SECRET_VALUE = "dash-planted-5c1e9b7a40"
SECRET = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: podinfo-token
stringData:
  token: {SECRET_VALUE}
"""
CANARY = {
    "analysis": {
        "interval": "1s",
        "checks": [
            {"name": "pods", "type": "podHealth", "maxRestarts": 0},  # the chart's blue-green analysis names it
            {"name": "pod-health", "type": "podHealth", "maxRestarts": 0, "count": 0},
        ],
    },
    "canary": {
        "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}],
        "analysis": {"checks": ["pod-health"]},
    },
}
"""Staging's canary: four steps, with a pod-health check measured every second in the background."""


def _get(port: int, path: str, token: str | None, seconds: float = 10) -> tuple[int, str]:
    """(status, body) of a GET; an event stream is read for ``seconds`` and returned as far as it came."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=seconds) as resp:
            if resp.headers.get("Content-Type") != "text/event-stream":
                return resp.status, resp.read().decode()
            chunks, deadline = [], time.monotonic() + seconds
            while time.monotonic() < deadline:
                line = resp.readline()
                if not line:
                    break
                chunks.append(line.decode())
            return resp.status, "".join(chunks)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except TimeoutError:
        return 200, ""
    except OSError:  # nothing listens yet
        return 0, ""


def _service_account(kube_api: client.ApiClient, namespace: str, name: str, readable: list[str]) -> str:
    """A ServiceAccount allowed to ``get`` ConfigMaps in each of ``readable`` (a Role and RoleBinding each); its
    token."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    for where in readable:
        rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
        rbac.create_namespaced_role(where, {"metadata": {"name": name}, "rules": [rule]})
        rbac.create_namespaced_role_binding(
            where,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
    return service_account_token(kube_api, name, namespace)


def _release(upstream: Upstream, tag: str, labels: dict[str, str] | None = None) -> str:
    path = upstream.work / "environments/staging/values/podinfo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"], values["podLabels"] = tag, labels or {}
    upstream._git(upstream.work, "pull", "-q", "--rebase", "origin", "main")  # the agent's promotion commits
    return upstream.commit(f"podinfo {tag}", {str(path.relative_to(upstream.work)): yaml.safe_dump(values)})


def _promote(upstream: Upstream, kubeconfig: Path) -> None:
    """``gitsync rollout promote`` of staging's paused canary, as a person runs it from a checkout of the
    commit the agent rolls out."""
    subprocess.run(
        [str(GITSYNC), "rollout", "promote", "--repo", str(upstream.work), "--env", "staging", "--app", "podinfo",
         "--kubeconfig", str(kubeconfig)],
        check=True, timeout=120, env={**os.environ},
    )  # fmt: skip


def test_the_dashboard_shows_environments_rollouts_live_and_promotions_to_those_allowed(
    agents: Agents, upstream: Upstream, namespace: str, prod_namespace: str, core: client.CoreV1Api,
    kube_api: client.ApiClient, browser: Any, tmp_path: Path,
) -> None:  # fmt: skip
    shots = tmp_path / "screenshots"
    seen: list[str] = []  # every page and event stream, for the secret grep
    prod = upstream.work / "environments/prod"
    env = yaml.safe_load((prod / "env.yaml").read_text())
    env["namespace"] = prod_namespace
    env["promotion"] = {"from": "staging", "mode": "auto", "soak": "2s", "values": ["image.tag"]}
    prod_values = yaml.safe_load((prod / "values/podinfo.yaml").read_text())
    prod_values["rollout"] = {"strategy": "rolling"}
    upstream.set_rollout("canary", **CANARY)
    first = upstream.commit(
        "Canary in staging, prod promoted from it, a token for podinfo",
        {
            "environments/prod/env.yaml": yaml.safe_dump(env),
            "environments/prod/values/podinfo.yaml": yaml.safe_dump(prod_values),
            "apps/podinfo/templates/token-secret.yaml": SECRET,
        },
    )
    port = free_port()
    agents.start(environments=["staging", "prod"], dashboard={"listen": f"127.0.0.1:{port}"})
    wait_for(
        "prod's first release", lambda: status_of(core, prod_namespace, env="prod").get("result") == "Succeeded", 90
    )

    # Only those allowed to read the state ConfigMaps see anything.
    viewer = _service_account(kube_api, namespace, "dashboard-viewer", [namespace, prod_namespace])
    stranger = _service_account(kube_api, namespace, "dashboard-stranger", [])
    status, body = _get(port, "/", None)
    assert status == 401 and "bearer token is required" in body
    assert _get(port, "/apps/staging/podinfo/events", None)[0] == 401
    status, body = _get(port, "/", stranger)
    assert status == 403 and "may not get configmaps" in body, body
    assert _get(port, "/", viewer)[0] == 200

    context = browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {viewer}"}, viewport={"width": 1280, "height": 860}
    )
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    assert page.locator("table.grid thead th").all_text_contents() == ["App", "staging", "prod"]
    for environment in ("staging", "prod"):
        cell = page.locator(f'td.cell[data-env="{environment}"][data-app="podinfo"]')
        assert "Succeeded" in cell.inner_text() and first[:7] in cell.inner_text()
    page.screenshot(path=str(shots / "grid.png"))
    seen.append(page.content())

    # A canary's step advances on screen, with no reload.
    page.goto(f"http://127.0.0.1:{port}/apps/staging/podinfo")
    page.evaluate("window.sameDocument = true")
    good = _release(upstream, "6.7.2")
    # The setWeight steps end as soon as the watch sees the canary's pods Ready (a fraction of a second on kwok);
    # the pauses (steps 2 and 4) wait for `gitsync rollout promote`, so the page sees them however loaded the
    # machine is (a timed pause could end before a slow page showed it).
    page.wait_for_selector('.step.current[data-step="2"]', timeout=60_000)
    assert page.locator('.step.done[data-step="1"]').count() == 1
    assert "step 2/4" in page.locator("#live p.phase").inner_text(), "the step as status and the list number it"
    page.screenshot(path=str(shots / "canary.png"), full_page=True)
    _promote(upstream, agents.kubeconfig)
    page.wait_for_selector('.step.current[data-step="4"]', timeout=60_000)  # two steps later, same page
    assert page.locator('.step.done[data-step="3"]').count() == 1
    assert page.evaluate("window.sameDocument") is True, "the step moved by a reload"
    page.screenshot(path=str(shots / "canary-advanced.png"))  # the README's picture (docs/img/dashboard.png)
    assert page.locator(".commands code").first.inner_text().startswith("gitsync rollout promote")
    seen.append(page.content())
    seen.append(_get(port, "/apps/staging/podinfo/events", viewer, seconds=2)[1])
    _promote(upstream, agents.kubeconfig)

    # The promotion of 6.7.2 appears in the chain staging -> prod.
    chain = page.locator("li.chain", has_text="podinfo 6.7.2")

    def promoted() -> bool:
        page.goto(f"http://127.0.0.1:{port}/promotions")
        return chain.count() == 1 and "Succeeded" in chain.locator('.stage[data-env="prod"]').inner_text()

    wait_for("6.7.2 promoted to prod in the chain", promoted, 90, interval=1)
    assert "Succeeded" in chain.locator('.stage[data-env="staging"]').inner_text()
    assert "from staging@" in chain.locator('.stage[data-env="prod"]').inner_text()
    page.screenshot(path=str(shots / "promotions.png"), full_page=True)
    seen.append(page.content())

    # A crash-looping release is rolled back: the failed check and what it saw.
    page.goto(f"http://127.0.0.1:{port}/apps/staging/podinfo")
    bad = _release(upstream, "6.8.0", {"gitsync.dev/fault": "crashloop"})
    page.wait_for_selector(".aborted", timeout=60_000)
    aborted = page.inner_text(".aborted")
    assert "Rolled back" in aborted and "CrashLoopBackOff" in aborted, aborted
    check = page.locator('.check[data-check="pod-health"]')
    assert "pods ready" in check.inner_text() and "restarts <= 0" in check.inner_text(), "what it saw, held to what"
    # Two watchers may see the crash loop first: the background check (it fails), or the rollout's own look at the
    # new version's pods (it aborts before the check's next measurement, which still shows its last verdict).
    if "pod-health" in aborted:
        assert "Failed" in check.inner_text(), check.inner_text()
    else:
        assert "new version's pods are failing" in aborted, aborted
    page.screenshot(path=str(shots / "rollback.png"), full_page=True)
    seen.append(page.content())
    page.goto(f"http://127.0.0.1:{port}/apps/staging/podinfo/diff/{first}")
    diff = page.inner_text("pre.diff")
    assert "Secret/" in diff and "podinfo-token" in diff and "*** (masked)" in diff, "the Secret's diff, masked"
    seen.append(page.content())

    # Phone width: the grid stacks into cards, nothing scrolls sideways.
    phone = browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {viewer}"}, viewport={"width": 390, "height": 844}
    ).new_page()
    phone.goto(f"http://127.0.0.1:{port}/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator('td.cell[data-env="prod"] .cell-env').is_visible()
    phone.screenshot(path=str(shots / "grid-phone.png"), full_page=True)

    # The same from a clone, with the user's own kubeconfig, on 127.0.0.1.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(upstream.bare), str(clone)], check=True, timeout=60)
    local_port = free_port()
    local = subprocess.Popen(
        [str(GITSYNC), "dashboard", "--kubeconfig", str(agents.kubeconfig), "--repo", str(clone),
         "--port", str(local_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    try:
        wait_for("gitsync dashboard", lambda: _get(local_port, "/", None)[0] == 200, 60)
        grid = _get(local_port, "/", None)[1]
        assert 'data-env="staging"' in grid and 'data-env="prod"' in grid
        promotions = _get(local_port, "/promotions", None)[1]
        assert "podinfo 6.7.2" in promotions
        seen += [grid, promotions, _get(local_port, f"/apps/staging/podinfo/diff/{first}", None)[1]]
        seen.append(_get(local_port, "/events", None, seconds=3)[1])
    finally:
        local.send_signal(signal.SIGTERM)
        local.wait(10)

    # No secret value anywhere (the rendered diff of the release that added the Secret included).
    planted = (SECRET_VALUE, base64.b64encode(SECRET_VALUE.encode()).decode())
    leaks = [value for value in planted for text in seen if value in text]
    assert not leaks, f"secret value served: {leaks}"
    assert good and bad
