#!/usr/bin/env python3
"""Rollout benchmark: gitsync's canary side by side with Argo Rollouts v1.10.1, in one run on one kubelab.

    .venv/bin/python bench/rollout.py                 3 rounds (about 5 minutes after the builds)
    .venv/bin/python bench/rollout.py --quick         1 round
    .venv/bin/python bench/rollout.py --rounds 5 --state-dir /tmp/kubelab-rollout

Method: ../shared/research/rollouts-vs-gitsync.md. A private kubelab is started with the apiserver's audit log on
(Metadata level, none for the control plane's own components, service accounts and nodes) and stopped at the end;
Argo Rollouts is built from its Go module by bench/argo_rollouts.py (cached) and runs as a local process
(``--namespaced``, no leader election); gitsync runs as ``gitsync run --config ...`` following a bare repository
made from example-repo (tests/e2e/agentlab.py), with a webhook per push and a 30 s poll.

Both tools run the same scenario on the same pod template (gitsync's render of podinfo): 4 replicas, canary steps
setWeight 25, pause 5s, 50, pause 5s, 75, pause 5s, 100, no traffic router; gitsync with its pod-health gate at the
chart's defaults, Argo with ``progressDeadlineSeconds: 10`` and ``progressDeadlineAbort: true`` (it has no pod
health check of its own). Each round runs both tools one after the other, alternating which goes first; each tool
ships a good release (a new image tag) and then a bad one (a new tag whose pods carry ``gitsync.dev/fault:
crashloop``, which kwok keeps CrashLooping and never Ready), then reverts to the good one (not timed).

The clock starts right before the change reaches the tool: Argo's ``Rollout`` patch, gitsync's ``git push`` (the
commit is made before) followed by a signed webhook. Pods and the tool's own state are followed by watches, so a
figure is when the event arrived. A release is done when
- good: 4 pods, all Ready on the new tag, none on the old one (terminating pods aside), and the tool agrees (gitsync:
  rollout phase Healthy with the new commit as stable; Argo: phase Healthy, stable ReplicaSet = current);
- bad: 4 Ready pods on the old tag, no pod on the new one, and the tool says aborted (gitsync: phase Aborted for
  that commit; Argo: ``status.abort``).
Per release: change -> done; change -> first new-version pod; API requests (unique audit IDs of the tool's user
agent received between change and done, and apart those of the 3 s after it: status, history, clean-up);
new-version pods created; the fewest Ready pods seen. RSS of both processes is sampled every 0.5 s for the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import argo_rollouts  # noqa: E402
from agentlab import GITSYNC, AgentProcess, Agents, Upstream, free_port, settled  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from lab import start_lab, stop_lab  # noqa: E402
from latency import new_namespace, rss_mb  # noqa: E402

REPLICAS = 4
PAUSE = 5
STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": f"{PAUSE}s"}},
    {"setWeight": 50},
    {"pause": {"duration": f"{PAUSE}s"}},
    {"setWeight": 75},
    {"pause": {"duration": f"{PAUSE}s"}},
    {"setWeight": 100},
]
PAUSES = sum(PAUSE for step in STEPS if "pause" in step)
GOOD_TAG = "6.7.1"
FAULT = {"gitsync.dev/fault": "crashloop"}
APP = "podinfo"
GITSYNC_AGENT = "gitsync/"  # user-agent prefixes, as the audit log records them
DRIVER_AGENT = "bench-driver"
TIMEOUT = 120.0
AFTER = 3.0  # seconds after a release ended whose requests are counted apart (status, history, clean-up)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "None",
            "users": ["kubelab-kube-controller-manager", "kubelab-kube-scheduler", "kubelab-kwok"],
        },
        {"level": "None", "userGroups": ["system:serviceaccounts", "system:nodes"]},
        {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
        {"level": "Metadata"},
    ],
}


class BenchError(Exception):
    """The scenario went wrong (a tool did not finish a release, a process died); the message says where."""


# ------------------------------------------------------------------------------------------------ observation


def new_api(kubeconfig: Path) -> client.ApiClient:
    api = config.new_client_from_config(str(kubeconfig))
    api.user_agent = DRIVER_AGENT
    return api


class Watched:
    """The live objects one list+watch sees (name -> object), kept current by a daemon thread; ``changed`` is
    notified after every event so waiters re-evaluate at the moment something happened."""

    def __init__(self, changed: threading.Condition, lister: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.objects: dict[str, Any] = {}
        self._changed = changed
        self._list = lister
        self._args, self._kw = args, kw
        self._watch = watch.Watch()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Watched:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                listed = self._list(*self._args, **self._kw)
                items, version = _items_and_version(listed)
                with self._changed:
                    self.objects = {_name(item): item for item in items}
                    self._changed.notify_all()
                stream = self._watch.stream(
                    self._list, *self._args, resource_version=version, timeout_seconds=600, **self._kw
                )
                for event in stream:
                    obj = event["object"]
                    with self._changed:
                        if event["type"] == "DELETED":
                            self.objects.pop(_name(obj), None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self.objects[_name(obj)] = obj
                        self._changed.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which reports it
            self.error = e
            with self._changed:
                self._changed.notify_all()


def _items_and_version(listed: Any) -> tuple[list[Any], str]:
    if isinstance(listed, dict):
        return list(listed.get("items") or []), str(listed["metadata"]["resourceVersion"])
    return list(listed.items or []), str(listed.metadata.resource_version)


def _name(obj: Any) -> str:
    return str(obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name)


@dataclass(frozen=True, slots=True)
class PodView:
    uid: str
    tag: str
    ready: bool


def pod_views(pods: dict[str, Any]) -> list[PodView]:
    """The pods that serve or will serve: terminating ones (a deletion timestamp) are left out."""
    views = []
    for pod in pods.values():
        if pod.metadata.deletion_timestamp is not None:
            continue
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        views.append(PodView(pod.metadata.uid, pod.spec.containers[0].image.rpartition(":")[2], ready))
    return views


@dataclass(slots=True)
class Release:
    """What one release did, filled in while waiting for it to end."""

    tool: str
    kind: str  # good | bad
    tag: str
    started: float  # time.monotonic()
    started_wall: float  # time.time(), to cut the audit log
    first_new: float | None = None
    new_pods: set[str] = field(default_factory=set)
    fewest_ready: int = REPLICAS
    took: float = 0.0
    ended_wall: float = 0.0
    requests: int = 0
    by_request: Counter[str] = field(default_factory=Counter)
    requests_after: int = 0  # in the AFTER seconds after done: the tool's tidying up


class Tracker:
    """One tool's namespace: its pods and its own rollout state, watched; waits for a release to end and records
    what happened on the way."""

    def __init__(self, kubeconfig: Path, namespace: str, state_lister: Callable[..., Any], *args: Any, **kw: Any):
        self.changed = threading.Condition()
        core = client.CoreV1Api(new_api(kubeconfig))
        self.pods = Watched(self.changed, core.list_namespaced_pod, namespace).start()
        self.state = Watched(self.changed, state_lister, *args, **kw).start()

    def wait(self, what: str, done: Callable[[list[PodView], dict[str, Any]], bool], release: Release | None) -> None:
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while True:
                for watched in (self.pods, self.state):
                    if watched.error is not None:
                        raise BenchError(f"watch failed while waiting for {what}: {watched.error}")
                views = pod_views(self.pods.objects)
                if release is not None:
                    self._note(release, views)
                if done(views, self.state.objects):
                    if release is not None:
                        release.took = time.monotonic() - release.started
                        release.ended_wall = time.time()
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"timed out after {TIMEOUT:.0f} s waiting for {what}")
                self.changed.wait(min(left, 0.5))

    @staticmethod
    def _note(release: Release, views: list[PodView]) -> None:
        new = [view for view in views if view.tag == release.tag]
        if new and release.first_new is None:
            release.first_new = time.monotonic() - release.started
        release.new_pods.update(view.uid for view in new)
        release.fewest_ready = min(release.fewest_ready, sum(view.ready for view in views))


def all_ready_on(tag: str) -> Callable[[list[PodView]], bool]:
    def check(views: list[PodView]) -> bool:
        return len(views) == REPLICAS and all(view.ready and view.tag == tag for view in views)

    return check


class Audit:
    """The apiserver's audit log (JSON lines), read as it grows: requests per user agent within a time window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._seen: dict[str, tuple[float, str, str]] = {}  # auditID -> (received, user agent, verb resource)

    def _read(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk.rpartition(b"\n")[0]
        self._offset += len(complete) + (1 if complete else 0)
        for line in complete.splitlines():
            event = json.loads(line)
            received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
            ref = event.get("objectRef") or {}
            what = f"{event['verb']} {ref.get('resource') or event.get('requestURI', '')}"
            self._seen.setdefault(event["auditID"], (received, event.get("userAgent", ""), what))

    def count(self, agent_prefix: str, start: float, end: float) -> Counter[str]:
        """Requests by ``verb resource`` of user agents starting with ``agent_prefix``, received in [start, end];
        waits until ``end`` plus the apiserver's batching (1 s) first."""
        time.sleep(max(0.0, end + 1.5 - time.time()))
        self._read()
        return Counter(
            what
            for received, agent, what in self._seen.values()
            if agent.startswith(agent_prefix) and start <= received <= end
        )


def sample_rss(pids: dict[str, int], samples: dict[str, list[float]], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                samples.setdefault(name, []).append(rss_mb(pid))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------------------------------------ tools


class Tool:
    """One side of the comparison: ships a release and says when its controller agrees it ended."""

    name: str
    agent_prefix: str
    pid: int
    tracker: Tracker

    def change(self, tag: str, labels: dict[str, str]) -> Release:
        raise NotImplementedError

    def controller_done(self, kind: str, state: dict[str, Any]) -> bool:
        raise NotImplementedError

    def revert(self, tag: str) -> None:
        raise NotImplementedError

    def check_alive(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def run_release(self, kind: str, tag: str, good_tag: str, audit: Audit) -> Release:
        """Ship ``tag`` (``bad``: with the crash-loop fault) and wait until it is promoted (good) or ``good_tag`` is
        fully back (bad)."""
        release = self.change(tag, FAULT if kind == "bad" else {})
        pods_done = all_ready_on(tag if kind == "good" else good_tag)
        self.tracker.wait(
            f"{self.name}: {kind} release {tag}",
            lambda views, state: pods_done(views) and self.controller_done(kind, state),
            release,
        )
        self.check_alive()
        release.by_request = audit.count(self.agent_prefix, release.started_wall, release.ended_wall)
        release.requests = sum(release.by_request.values())
        after = audit.count(self.agent_prefix, release.ended_wall + 1e-6, release.ended_wall + AFTER)
        release.requests_after = sum(after.values())
        return release


def render_podinfo(upstream: Upstream) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(GITSYNC), "render", "--repo", str(upstream.work), "--env", "staging", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    parsed = json.loads(out.stdout)
    return list(parsed if isinstance(parsed, list) else parsed.get("items", []))


class Gitsync(Tool):
    name = "gitsync"
    agent_prefix = GITSYNC_AGENT

    def __init__(self, work: Path, kubeconfig: Path, core: client.CoreV1Api) -> None:
        self.namespace = new_namespace(core, "gs-bench")
        self.upstream = Upstream(work / "git", self.namespace, strategy="canary")
        self.upstream.set_rollout("canary", canary={"steps": STEPS})
        self._edit_values(replicas=REPLICAS)
        first = self.upstream.commit(f"bench: {REPLICAS} replicas, the benchmark's canary steps")
        self.agents = Agents(work / "agents", kubeconfig, self.upstream)
        self.agent: AgentProcess = self.agents.start("gitsync", pollInterval="30s", selfHeal=True, prune=True)
        assert self.agent.process is not None
        self.pid = self.agent.process.pid
        self.revision = first
        try:
            driver = client.CoreV1Api(new_api(kubeconfig))
            self.tracker = Tracker(
                kubeconfig,
                self.namespace,
                driver.list_namespaced_config_map,
                self.namespace,
                field_selector=f"metadata.name=gitsync.{APP}.staging.rollout",
            )
            settled(core, self.namespace, first, timeout=TIMEOUT)
            self.tracker.wait("gitsync: first sync", lambda views, _: all_ready_on(GOOD_TAG)(views), None)
        except BaseException:
            self.stop()
            raise

    def _edit_values(self, **top: Any) -> None:
        path = self.upstream.work / "environments/staging/values/podinfo.yaml"
        values = yaml.safe_load(path.read_text())
        values.update(top)
        path.write_text(yaml.safe_dump(values))

    def _release_values(self, tag: str, labels: dict[str, str]) -> None:
        path = self.upstream.work / "environments/staging/values/podinfo.yaml"
        values = yaml.safe_load(path.read_text())
        values["image"]["tag"], values["podLabels"] = tag, labels
        path.write_text(yaml.safe_dump(values))

    def change(self, tag: str, labels: dict[str, str]) -> Release:
        self._release_values(tag, labels)
        self.revision = self.upstream.commit(f"podinfo {tag}", push=False)
        release = Release(self.name, "bad" if labels else "good", tag, time.monotonic(), time.time())
        self.upstream.push()
        if self.agent.push_webhook(self.revision) != 202:
            raise BenchError(f"gitsync: the webhook for {self.revision[:12]} was not accepted")
        return release

    def rollout_state(self, state: dict[str, Any]) -> dict[str, Any]:
        cm = state.get(f"gitsync.{APP}.staging.rollout")
        if cm is None:
            return {}
        return dict(json.loads((cm.data or {}).get("rollout.json") or "{}").get("state") or {})

    def controller_done(self, kind: str, state: dict[str, Any]) -> bool:
        rollout = self.rollout_state(state)
        if kind == "good":
            return rollout.get("phase") == "Healthy" and rollout.get("stableRevision") == self.revision
        return rollout.get("phase") == "Aborted" and rollout.get("revision") == self.revision

    def revert(self, tag: str) -> None:
        self._release_values(tag, {})
        self.revision = self.upstream.commit(f"podinfo back to {tag}", push=False)
        self.upstream.push()
        self.agent.push_webhook(self.revision)
        self.tracker.wait(
            f"gitsync: revert to {tag}",
            lambda views, state: (
                all_ready_on(tag)(views) and self.rollout_state(state).get("phase") in ("Healthy", "Idle")
            ),
            None,
        )

    def check_alive(self) -> None:
        if self.agent.process is None or self.agent.process.poll() is not None:
            raise BenchError(f"gitsync: the agent exited; see {self.agent.log_path}")

    def stop(self) -> None:
        self.agents.stop_all()


class Argo(Tool):
    name = "argo"
    agent_prefix = argo_rollouts.USER_AGENT_PREFIX

    def __init__(
        self,
        built: Path,
        work: Path,
        kubeconfig: Path,
        api: client.ApiClient,
        core: client.CoreV1Api,
        objects: list[dict[str, Any]],
    ) -> None:
        self.namespace = new_namespace(core, "ar-bench")
        self.custom = client.CustomObjectsApi(api)
        extensions = client.ApiextensionsV1Api(api)
        for crd in argo_rollouts.crds(built):
            with contextlib.suppress(client.ApiException):
                extensions.create_custom_resource_definition(crd)
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        self.template = deployment["spec"]["template"]
        for obj in objects:  # what the pods refer to: ServiceAccount, ConfigMap; the Service for good measure
            if obj["kind"] in ("ServiceAccount", "ConfigMap", "Service"):
                body = {**obj, "metadata": {"name": obj["metadata"]["name"], "labels": obj["metadata"].get("labels")}}
                getattr(core, f"create_namespaced_{_snake(obj['kind'])}")(self.namespace, body)
        _wait_established(extensions)
        self.log_path = work / "argo-rollouts.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(built / "rollouts-controller"),
                    f"--kubeconfig={kubeconfig}",
                    "--namespaced",
                    f"--namespace={self.namespace}",
                    "--leader-elect=false",
                    f"--metricsPort={free_port()}",
                    f"--healthzPort={free_port()}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid
        try:
            self._first_rollout(kubeconfig, deployment["spec"]["selector"])
        except BaseException:
            self.stop()
            raise

    def _first_rollout(self, kubeconfig: Path, selector: dict[str, Any]) -> None:
        rollout = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": APP},
            "spec": {
                "replicas": REPLICAS,
                "progressDeadlineSeconds": 10,
                "progressDeadlineAbort": True,
                "revisionHistoryLimit": 5,
                "selector": selector,
                "template": self.template,
                "strategy": {"canary": {"steps": STEPS}},
            },
        }
        self.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", self.namespace, "rollouts", rollout)
        driver = client.CustomObjectsApi(new_api(kubeconfig))
        self.tracker = Tracker(
            kubeconfig,
            self.namespace,
            driver.list_namespaced_custom_object,
            "argoproj.io",
            "v1alpha1",
            self.namespace,
            "rollouts",
        )
        self.tracker.wait(
            "argo: first rollout",
            lambda views, state: all_ready_on(GOOD_TAG)(views) and self.controller_done("good", state),
            None,
        )

    def _patch_template(self, tag: str, labels: dict[str, str]) -> None:
        template = json.loads(json.dumps(self.template))
        container = template["spec"]["containers"][0]
        container["image"] = f"{container['image'].rpartition(':')[0]}:{tag}"
        # A merge patch (what the client sends for custom objects): null removes the fault label of a bad release.
        template["metadata"]["labels"] = {**template["metadata"]["labels"], **dict.fromkeys(FAULT), **labels}
        patch = {"spec": {"template": template}}
        self.custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", self.namespace, "rollouts", APP, patch)

    def change(self, tag: str, labels: dict[str, str]) -> Release:
        release = Release(self.name, "bad" if labels else "good", tag, time.monotonic(), time.time())
        self._patch_template(tag, labels)
        return release

    def controller_done(self, kind: str, state: dict[str, Any]) -> bool:
        status = (state.get(APP) or {}).get("status") or {}
        if kind == "good":
            healthy = status.get("phase") == "Healthy" and not status.get("abort")
            return healthy and bool(status.get("stableRS")) and status.get("stableRS") == status.get("currentPodHash")
        return bool(status.get("abort"))

    def revert(self, tag: str) -> None:
        self._patch_template(tag, {})
        self.tracker.wait(
            f"argo: revert to {tag}",
            lambda views, state: all_ready_on(tag)(views) and self.controller_done("good", state),
            None,
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"argo: rollouts-controller exited with {self.process.returncode}; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _snake(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")


def _wait_established(extensions: client.ApiextensionsV1Api) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition("rollouts.argoproj.io")
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        time.sleep(0.2)
    raise BenchError("argo: the Rollout CRD was not Established in 30 s")


# ---------------------------------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    kind: str  # which releases: good | bad
    value: Callable[[Release], float]
    goal: str = ""  # "<= N [unit]" or "= N", for gitsync
    unit: str = ""


ROWS = (
    Row("good release: change -> fully promoted", "good", lambda r: r.took, unit="s"),
    Row(f"  the same minus the {PAUSES} s of pauses", "good", lambda r: r.took - PAUSES, "<= 1 s", "s"),
    Row("bad release: change -> stable fully restored", "bad", lambda r: r.took, "<= 1.5 s", "s"),
    Row("good: first new-version pod after the change", "good", lambda r: _or_nan(r.first_new), unit="s"),
    Row("bad: first new-version pod after the change", "bad", lambda r: _or_nan(r.first_new), unit="s"),
    Row("good: API requests per rollout", "good", lambda r: r.requests, "<= 60"),
    Row(f"good: API requests in the {AFTER:g} s after", "good", lambda r: r.requests_after),
    Row("bad: API requests per rollout", "bad", lambda r: r.requests),
    Row(f"bad: API requests in the {AFTER:g} s after", "bad", lambda r: r.requests_after),
    Row("good: new-version pods created", "good", lambda r: len(r.new_pods), f"= {REPLICAS}"),
    Row("bad: new-version pods created", "bad", lambda r: len(r.new_pods)),
    Row("good: fewest Ready pods during the canary", "good", lambda r: r.fewest_ready, f"= {REPLICAS}"),
    Row("bad: fewest Ready pods during the canary", "bad", lambda r: r.fewest_ready, f"= {REPLICAS}"),
)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def span(values: list[float], unit: str) -> str:
    """``min / median``, two decimals for seconds, whole numbers for counts."""
    digits = 2 if unit else 0
    suffix = f" {unit}" if unit else ""
    low, mid = min(values), statistics.median(values)
    return f"{low:.{digits}f}{suffix}" if low == mid else f"{low:.{digits}f} / {mid:.{digits}f}{suffix}"


def verdict(goal: str, values: list[float]) -> str:
    """``goal: met`` when every run meets it, else in how many runs it was."""
    op, number = goal.split()[:2]
    met = sum(v <= float(number) if op == "<=" else v == float(number) for v in values)
    return f"{goal}: {'met' if met == len(values) else f'NOT met (met in {met} of {len(values)})'}"


def report(releases: list[Release], rss: dict[str, list[float]], peaks: dict[str, float]) -> None:
    rounds = sum(r.tool == "gitsync" and r.kind == "good" for r in releases)
    print(f"\nArgo Rollouts {argo_rollouts.VERSION} and gitsync, {rounds} round(s): min / median; ratio of medians")
    header = f"{'measure':<46} {'Argo Rollouts':>15} {'gitsync':>15} {'gitsync/Argo':>12}  goal (gitsync)"
    print(header + "\n" + "-" * len(header))
    for row in ROWS:
        argo = [row.value(r) for r in releases if r.tool == "argo" and r.kind == row.kind]
        ours = [row.value(r) for r in releases if r.tool == "gitsync" and r.kind == row.kind]
        if not argo or not ours:
            continue
        a, g = statistics.median(argo), statistics.median(ours)
        ratio = f"{g / a:.2f}x" if a > 0 and g == g else "-"
        goal = verdict(row.goal, ours) if row.goal else ""
        print(f"{row.label:<46} {span(argo, row.unit):>15} {span(ours, row.unit):>15} {ratio:>12}  {goal}")
    sizes = {name: f"{min(v):.1f}-{max(v):.1f} ({peaks[name]:.1f})" for name, v in rss.items() if v}
    if len(sizes) == 2:
        a, g = statistics.median(rss["argo"]), statistics.median(rss["gitsync"])
        label = "RSS over the run, MiB (peak)"
        print(f"{label:<46} {sizes['argo']:>15} {sizes['gitsync']:>15} {g / a:>11.2f}x")
    for tool in ("argo", "gitsync"):
        good = [r for r in releases if r.tool == tool and r.kind == "good"]
        top = sum((r.by_request for r in good), Counter()).most_common(8)
        print(f"{tool}: requests per good rollout (mean): " + ", ".join(f"{w} {c / len(good):.1f}" for w, c in top))


# ------------------------------------------------------------------------------------------------------ main


@contextlib.contextmanager
def lab(state_dir: Path) -> Iterator[tuple[Path, Audit]]:
    """A private kubelab with the audit log on, stopped afterwards."""
    state_dir.mkdir(parents=True, exist_ok=True)
    policy, log = state_dir / "audit-policy.yaml", state_dir / "audit.log"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    log.unlink(missing_ok=True)
    kubeconfig = start_lab(
        state_dir,
        f"--audit-policy-file={policy}",
        f"--audit-log-path={log}",
        "--audit-log-format=json",
        "--audit-log-mode=batch",
        "--audit-log-batch-max-wait=1s",
    )
    try:
        yield kubeconfig, Audit(log)
    finally:
        stop_lab(state_dir)


def run(built: Path, work: Path, kubeconfig: Path, audit: Audit, rounds: int) -> None:
    api = new_api(kubeconfig)
    core = client.CoreV1Api(api)
    print("bench: starting gitsync (agent) and Argo Rollouts (controller)", flush=True)
    ours = Gitsync(work / "gitsync", kubeconfig, core)
    tools: list[Tool] = [ours]
    stop = threading.Event()
    rss: dict[str, list[float]] = {}
    try:
        tools.insert(0, Argo(built, work, kubeconfig, api, core, render_podinfo(ours.upstream)))
        sampler = threading.Thread(target=sample_rss, args=({t.name: t.pid for t in tools}, rss, stop), daemon=True)
        sampler.start()
        releases: list[Release] = []
        for n in range(rounds):
            order = tools if n % 2 == 0 else tools[::-1]
            for tool in order:
                new_good, bad = f"6.8.{n}", f"6.9.{n}"
                for kind, tag in (("good", new_good), ("bad", bad)):
                    release = tool.run_release(kind, tag, new_good, audit)
                    releases.append(release)
                    first = f"{release.first_new:.2f} s" if release.first_new is not None else "-"
                    print(
                        f"round {n + 1} {tool.name:<7} {kind:<4} {tag}: {release.took:6.2f} s, first new pod {first}, "
                        f"{release.requests} requests (+{release.requests_after} after), "
                        f"{len(release.new_pods)} new pods, fewest Ready {release.fewest_ready}",
                        flush=True,
                    )
                tool.revert(new_good)
        # VmHWM is updated lazily by the kernel, so a VmRSS sample can exceed it by a little.
        peaks = {t.name: max([peak_rss_mb(t.pid), *rss.get(t.name, [])]) for t in tools}
        stop.set()
        report(releases, rss, peaks)
    finally:
        stop.set()
        for tool in tools:
            tool.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of good + bad release per tool")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--state-dir", type=Path, help="kubelab state dir (default: a temporary one)")
    args = parser.parse_args()
    built = argo_rollouts.build()  # before the cluster starts: the first build takes minutes
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-rollout-") as tmp:
        work = Path(tmp)
        with lab(args.state_dir or work / "kubelab") as (kubeconfig, audit):
            try:
                run(built, work, kubeconfig, audit, 1 if args.quick else args.rounds)
            except BenchError as e:
                for log in sorted(work.rglob("*.log")):
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- {log.name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
                print(f"bench: {e}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
