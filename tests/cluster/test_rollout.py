"""Canary and blue-green rollouts on kubelab: the executor driving real Deployments, Services and pods.

Each test drives `advance` in a bounded loop the way the agent does (one step per call, sleeping only as long as
the step asked), with a real Prometheus for metric checks and kwok's fault stages for bad releases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from gitsync import inventory as inventories
from gitsync.adapters.clock import SystemClock
from gitsync.adapters.http_check import HttpClient
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.prometheus import PrometheusClient
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.analysis.measure import Measurer
from gitsync.cli.status import rollout_lines
from gitsync.errors import InvalidObjectError, TerminalError
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, MANAGER, AppEnv, Json, Manifest, ObjectId
from gitsync.strategy import control
from gitsync.strategy.executor import PART, RolloutExecutor, StepOutcome, advance
from gitsync.strategy.state import CommandName, Phase, RolloutState

KEY = AppEnv("web", "test")
REPLICAS = 4


@dataclass(frozen=True)
class App:
    """A rendered app as the renderer hands it over (``executor.Rendered``)."""

    app_env: AppEnv
    namespace: str
    manifests: tuple[Manifest, ...]
    values: Mapping[str, Any] = field(hash=False)
    revision: str | None = None


OWNERSHIP = {LABEL_APP: KEY.app, LABEL_ENV: KEY.env, LABEL_MANAGED_BY: MANAGER}
"""The labels the renderer puts on every object."""


def deployment(namespace: str, version: str, *, replicas: int = REPLICAS, fault: str = "") -> Json:
    labels = {"app": "web", "version": version}
    if fault:
        labels["gitsync.dev/fault"] = fault
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web", **OWNERSHIP}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": f"example.com/web:{version}"}]},
            },
        },
    }


def service(namespace: str, name: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def app(
    namespace: str, version: str, rollout: Mapping[str, Any], *, fault: str = "", services: tuple[str, ...] = ()
) -> App:
    bodies = [deployment(namespace, version, fault=fault), *(service(namespace, s) for s in services)]
    manifests = tuple(Manifest(ObjectId.of(b), b, "test") for b in bodies)
    return App(KEY, namespace, manifests, {"rollout": rollout}, revision=version)


@dataclass
class Lab:
    namespace: str
    cluster: KubeCluster
    store: ConfigMapStateStore
    clock: SystemClock = field(default_factory=SystemClock)
    requests_per_step: list[int] = field(default_factory=list)

    def step(self, target: App, measurer: Measurer | None = None) -> StepOutcome:
        before = sum(self.cluster.requests.values())
        measurer = measurer or Measurer(PrometheusClient(), HttpClient())  # composed here as the CLI and agent do
        out = advance(target, self.cluster, self.store, self.clock, measurer=measurer)
        self.requests_per_step.append(sum(self.cluster.requests.values()) - before)
        return out

    def drive(
        self,
        target: App,
        until: Callable[[StepOutcome], bool],
        *,
        timeout: float = 60,
        measurer: Measurer | None = None,
        each: Callable[[StepOutcome], None] | None = None,
    ) -> StepOutcome:
        deadline = time.monotonic() + timeout
        while True:
            out = self.step(target, measurer)
            if each:
                each(out)
            if until(out):
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"rollout stuck: {out}; state {self.state()}")
            time.sleep(min(out.requeue_after if out.requeue_after is not None else 0.5, 0.5))

    def deploy(self, name: str) -> Json | None:
        return self.cluster.get(ObjectId("apps", "Deployment", self.namespace, name))

    def ready(self, name: str) -> int:
        live = self.deploy(name)
        return int(((live or {}).get("status") or {}).get("readyReplicas") or 0)

    def replicas(self, name: str) -> int:
        live = self.deploy(name)
        return int(((live or {}).get("spec") or {}).get("replicas") or 0) if live else 0

    def pods(self, selector: str = "app=web") -> list[Json]:
        items = self.cluster.list("", "Pod", self.namespace, selector).items
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for pod in self.pods():
            version = pod["metadata"]["labels"]["version"]
            out[version] = out.get(version, 0) + 1
        return out

    def selector(self, name: str) -> dict[str, str]:
        live = self.cluster.get(ObjectId("", "Service", self.namespace, name))
        assert live is not None
        return dict(live["spec"]["selector"])

    def state(self) -> Json:
        return control.describe_rollout(self.store, KEY, self.namespace)

    def events(self, reason: str) -> list[Json]:
        return [e for e in self.cluster.list("", "Event", self.namespace).items if e.get("reason") == reason]

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 30) -> float:
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)
        return time.monotonic() - start


def ready(pod: Json) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@pytest.fixture
def lab(kubelab, namespace: str) -> Lab:
    cluster = KubeCluster(kubelab.kubeconfig)
    return Lab(namespace, cluster, ConfigMapStateStore(cluster))


def released(lab: Lab, rollout: Mapping[str, Any], *, services: tuple[str, ...] = ()) -> None:
    """v1 deployed (first deployment goes straight to stable) and Ready."""
    v1 = app(lab.namespace, "v1", rollout, services=services)
    assert lab.step(v1).phase is Phase.HEALTHY
    lab.wait("v1 Ready", lambda: lab.ready("web" if rollout["strategy"] == "canary" else "web-blue") == REPLICAS)


CANARY = {
    "strategy": "canary",
    "canary": {
        "steps": [
            {"setWeight": 25},
            {"pause": {"duration": "1s"}},
            {"setWeight": 50},
            {"analysis": {"checks": [{"name": "pods", "type": "podHealth", "interval": "1s", "count": 2}]}},
            {"setWeight": 75},
        ]
    },
}


def test_good_canary_goes_through_every_step_and_ends_on_the_new_version(lab: Lab) -> None:
    lab.cluster.apply(service(lab.namespace, "web"))
    released(lab, CANARY)
    v2 = app(lab.namespace, "v2", CANARY)
    seen_weights: list[int] = []
    capacity: list[int] = []

    def observe(out: StepOutcome) -> None:
        state = lab.state()
        if state["phase"] in ("Progressing", "Promoting") and state["weight"] not in seen_weights:
            seen_weights.append(state["weight"])
        # Pods, not the Deployments' counts: at promotion the pods change hands between the two Deployments.
        capacity.append(sum(ready(pod) for pod in lab.pods()))

    out = lab.drive(v2, lambda o: o.phase is Phase.HEALTHY, each=observe, timeout=90)
    assert out.message == "rollout completed"
    assert seen_weights[:1] == [0] and {25, 50, 75} <= set(seen_weights)
    assert min(capacity) >= REPLICAS, "stable lost capacity during the canary"
    lab.wait("old pods gone", lambda: lab.versions() == {"v2": REPLICAS})
    assert lab.deploy("web-canary") is None
    assert lab.deploy("web")["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    assert lab.state()["history"][-1]["outcome"] == "succeeded"
    # The Service selector spans both tracks (canary pods carry the app labels plus the track label).
    assert lab.selector("web") == {"app": "web"}
    steps = lab.requests_per_step
    print(f"\nAPI requests per rollout step: mean {sum(steps) / len(steps):.1f}, max {max(steps)}, steps {len(steps)}")


def test_crashlooping_canary_is_rolled_back_before_its_first_step_completes(lab: Lab) -> None:
    released(lab, CANARY)
    bad = app(lab.namespace, "v2", CANARY, fault="crashloop")
    applied = time.monotonic()
    out = lab.drive(bad, lambda o: o.phase is not Phase.PROGRESSING, timeout=60)
    assert out.phase is Phase.ABORTED
    restored = lab.wait(
        "stable fully restored",
        lambda: lab.ready("web") == REPLICAS and not lab.pods("gitsync.dev/track=canary"),
    )
    elapsed = time.monotonic() - applied
    state = lab.state()
    assert state["step"] == 0, "the first step must not have completed"
    assert state["abortReason"] == "new version's pods are failing"
    assert any("CrashLoopBackOff" in line for line in state["evidence"])
    assert state["history"][-1]["outcome"] == "aborted"
    assert lab.events("RolloutAborted")
    print(f"\nbad release -> stable fully restored: {elapsed:.1f}s (restore after abort {restored:.1f}s)")
    # The failed revision is not retried on every poll.
    for _ in range(3):
        assert lab.step(bad).phase is Phase.ABORTED
    assert lab.replicas("web-canary") == 0
    # ... but `gitsync rollout retry` starts it again.
    control.request(lab.store, KEY, lab.namespace, CommandName.RETRY, lab.clock.now(), "test")
    assert lab.step(bad).phase is Phase.PROGRESSING


def test_canary_never_ready_fails_at_its_progress_deadline(lab: Lab) -> None:
    rollout = {**CANARY, "podHealth": {"progressDeadlineSeconds": "3s"}}
    released(lab, rollout)
    # drive() gives up after 60 s, half the 120 s default deadline: an abort at all is the 3 s deadline's.
    out = lab.drive(app(lab.namespace, "v2", rollout, fault="never-ready"), lambda o: o.phase is not Phase.PROGRESSING)
    assert out.phase is Phase.ABORTED
    assert any("not Ready" in line and "(deadline 3s)" in line for line in lab.state()["evidence"])
    assert lab.ready("web") == REPLICAS


def prometheus_canary(metrics) -> dict[str, Any]:
    return {
        "strategy": "canary",
        "analysis": {
            "prometheus": {"address": metrics.address},
            "checks": [
                {
                    "name": "error-rate",
                    "type": "prometheus",
                    "query": metrics.query("errors_ratio"),
                    "interval": "1s",
                    "count": 2,
                    "successCondition": "result[0] < 0.05",
                }
            ],
        },
        "canary": {"steps": [{"setWeight": 25}, {"analysis": {"checks": ["error-rate"]}}, {"setWeight": 50}]},
    }


def test_prometheus_check_failing_at_step_2_rolls_back(lab: Lab, metrics) -> None:
    rollout = prometheus_canary(metrics)
    released(lab, rollout)
    metrics.set("errors_ratio", 0.4)
    metrics.wait_for("errors_ratio", 0.4)
    v2 = app(lab.namespace, "v2", rollout)
    applied = time.monotonic()
    out = lab.drive(v2, lambda o: o.phase is not Phase.PROGRESSING, timeout=60)
    assert out.phase is Phase.ABORTED
    aborted = time.monotonic()
    state = lab.state()
    assert state["step"] == 1 and state["abortReason"] == "analysis at step 2/3 failed: error-rate"
    assert "0.4" in state["evidence"][0]
    lab.wait("stable restored", lambda: lab.ready("web") == REPLICAS and not lab.pods("gitsync.dev/track=canary"))
    done = time.monotonic()
    print(
        f"\nfailing metric: release applied -> aborted {aborted - applied:.1f}s, "
        f"aborted -> stable fully restored {done - aborted:.1f}s"
    )


def test_no_data_pauses_until_promoted(lab: Lab, metrics) -> None:
    rollout = prometheus_canary(metrics)
    released(lab, rollout)
    v2 = app(lab.namespace, "v2", rollout)  # errors_ratio was never set for this test: no data
    out = lab.drive(v2, lambda o: o.phase is not Phase.PROGRESSING, timeout=60)
    assert out.phase is Phase.PAUSED and "inconclusive" in out.message
    assert lab.state()["analysis"][0]["outcome"] == "inconclusive"
    for _ in range(3):  # no data is never success: it stays paused
        assert lab.step(v2).phase is Phase.PAUSED
    control.request(lab.store, KEY, lab.namespace, CommandName.PROMOTE, lab.clock.now(), "test")
    out = lab.drive(v2, lambda o: o.phase is Phase.HEALTHY, timeout=60)
    lab.wait("only v2", lambda: lab.versions() == {"v2": REPLICAS})


PAUSES = {
    "strategy": "canary",
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}, {"pause": {}}, {"setWeight": 75}]},
}


def step_started_at(lab: Lab) -> float:
    """When the rollout entered its current step, as its state records it (the SystemClock's time)."""
    doc, _ = lab.store.load(KEY, lab.namespace, PART)
    return RolloutState.from_json(doc["state"]).step_started_at


def test_timed_pause_then_indefinite_pause_released_by_promote(lab: Lab) -> None:
    released(lab, PAUSES)
    v2 = app(lab.namespace, "v2", PAUSES)
    lab.drive(v2, lambda o: lab.state()["step"] == 1)
    entered = step_started_at(lab)
    out = lab.drive(v2, lambda o: o.phase is Phase.PAUSED)
    assert lab.state()["step"] == 2
    # By the rollout's own record of when each step began, not by when this test happened to look.
    assert step_started_at(lab) - entered >= 2, "the timed pause (2 s) did not wait"
    for _ in range(3):
        time.sleep(0.3)
        assert lab.step(v2).phase is Phase.PAUSED
    control.request(lab.store, KEY, lab.namespace, CommandName.PROMOTE, lab.clock.now(), "alice")
    out = lab.step(v2)
    assert out.phase is Phase.PROGRESSING and lab.state()["step"] == 3
    lab.drive(v2, lambda o: o.phase is Phase.HEALTHY, timeout=60)


def test_killed_executor_resumes_at_the_same_step(lab: Lab, kubelab) -> None:
    released(lab, PAUSES)
    v2 = app(lab.namespace, "v2", PAUSES)
    lab.drive(v2, lambda o: o.phase is Phase.PAUSED)
    before = lab.state()
    canary_pods = {p["metadata"]["name"] for p in lab.pods("gitsync.dev/track=canary")}
    # A new agent: new connection, new store, nothing in memory but what the cluster holds.
    fresh_cluster = KubeCluster(kubelab.kubeconfig)
    fresh = Lab(lab.namespace, fresh_cluster, ConfigMapStateStore(fresh_cluster))
    out = fresh.step(v2)
    assert out.phase is Phase.PAUSED and fresh.state()["step"] == before["step"] == 2
    assert {p["metadata"]["name"] for p in fresh.pods("gitsync.dev/track=canary")} == canary_pods, "canary restarted"
    control.request(fresh.store, KEY, lab.namespace, CommandName.PROMOTE, fresh.clock.now(), "test")
    fresh.drive(v2, lambda o: o.phase is Phase.HEALTHY, timeout=60)


def test_new_commit_mid_rollout_supersedes_it(lab: Lab) -> None:
    released(lab, PAUSES)
    v2 = app(lab.namespace, "v2", PAUSES)
    lab.drive(v2, lambda o: o.phase is Phase.PAUSED)
    v3 = app(lab.namespace, "v3", PAUSES)
    out = lab.step(v3)
    state = lab.state()
    assert out.phase is Phase.PROGRESSING and state["step"] == 0 and state["revision"] == "v3"
    assert state["history"][-1]["outcome"] == "superseded" and state["history"][-1]["revision"] == "v2"
    lab.drive(v3, lambda o: o.phase is Phase.PAUSED)
    control.request(lab.store, KEY, lab.namespace, CommandName.PROMOTE, lab.clock.now(), "test")
    lab.drive(v3, lambda o: o.phase is Phase.HEALTHY, timeout=60)
    lab.wait("only v3", lambda: lab.versions() == {"v3": REPLICAS})


PROMOTE_AT_ONCE = {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}]}}


def test_canary_of_a_changed_selector_is_refused_before_anything_runs(lab: Lab) -> None:
    """The stable Deployment's selector is immutable, so the canary could never be promoted to it: refused at once,
    in one line naming the object and the field, instead of running every step and sticking in Promoting."""
    released(lab, PAUSES)
    v2 = app(lab.namespace, "v2", PAUSES)
    body = v2.manifests[0].body
    body["spec"]["selector"]["matchLabels"]["tier"] = "web"
    body["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    with pytest.raises(InvalidObjectError) as refused:
        lab.step(v2)
    assert str(refused.value).startswith(f"Deployment.apps/{lab.namespace}/web: field is immutable: spec.selector:")
    assert "not the rendered {app=web, tier=web} (test); keep the selector" in str(refused.value), "its template:line"
    assert refused.value.immutable and lab.deploy("web-canary") is None and lab.state()["phase"] == "Healthy"
    assert lab.versions() == {"v1": REPLICAS}
    # pushed while a canary's pods are being handed to the stable Deployment: the hand-over ends first
    lab.drive(app(lab.namespace, "v3", PROMOTE_AT_ONCE), lambda o: o.phase is Phase.PROMOTING)
    v4 = app(lab.namespace, "v4", PROMOTE_AT_ONCE)
    v4.manifests[0].body["spec"]["selector"] = body["spec"]["selector"]
    v4.manifests[0].body["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    lab.drive(v4, lambda o: o.phase is Phase.HEALTHY)
    assert lab.state()["history"][-1]["revision"] == "v3"
    with pytest.raises(InvalidObjectError):
        lab.step(v4)


def test_a_deployment_of_another_app_named_like_the_canary_is_never_touched(lab: Lab) -> None:
    """Tracks are found by name (``web-canary``): another app's Deployment of that name is neither retemplated,
    scaled nor deleted; the rollout stops in one line naming it and its owner."""
    released(lab, PAUSES)
    other = deployment(lab.namespace, "other", replicas=1)
    other["spec"]["selector"] = {"matchLabels": {"app": "shop"}}
    other["spec"]["template"]["metadata"]["labels"] = {"app": "shop", "version": "other"}
    other["metadata"] = {
        "name": "web-canary",
        "namespace": lab.namespace,
        "labels": {**OWNERSHIP, LABEL_APP: "shop"},
    }
    lab.cluster.apply(other, force=True)
    before = lab.deploy("web-canary")
    with pytest.raises(TerminalError) as refused:
        lab.step(app(lab.namespace, "v2", PAUSES))
    assert str(refused.value) == (
        f"Deployment.apps/{lab.namespace}/web-canary: the canary track of web has this name, but it belongs to "
        "app shop in environment test: rename one of the two workloads"
    )
    after = lab.deploy("web-canary")
    assert after is not None and before is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"] == 1
    assert after["metadata"]["labels"][LABEL_APP] == "shop" and lab.versions() == {"v1": REPLICAS}


def blue_green(**extra: Any) -> dict[str, Any]:
    return {
        "strategy": "blueGreen",
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "scaleDownDelaySeconds": 2,
            "prePromotionAnalysis": {"checks": [{"name": "pods", "type": "podHealth", "interval": "1s"}]},
            **extra,
        },
    }


def test_blue_green_switches_the_active_service_and_scales_down_after_the_delay(lab: Lab) -> None:
    rollout = blue_green()
    services = ("web", "web-preview")
    released(lab, rollout, services=services)
    assert lab.selector("web") == {"app": "web", "gitsync.dev/color": "blue"}
    v2 = app(lab.namespace, "v2", rollout, services=services)
    lab.drive(v2, lambda o: lab.selector("web-preview").get("gitsync.dev/color") == "green")
    assert lab.selector("web")["gitsync.dev/color"] == "blue", "switched before the preview was verified"
    lab.drive(v2, lambda o: o.phase is Phase.PROMOTING)
    assert lab.selector("web")["gitsync.dev/color"] == "green"
    assert lab.replicas("web-blue") == REPLICAS, "old version scaled down before the delay"
    out = lab.drive(v2, lambda o: o.phase is Phase.HEALTHY, timeout=30)
    assert out.serving == {ObjectId("apps", "Deployment", lab.namespace, "web-green")}
    tracks = {ObjectId("apps", "Deployment", lab.namespace, f"web-{track}") for track in ("canary", "blue", "green")}
    assert out.exclude == {ObjectId("apps", "Deployment", lab.namespace, "web")} | tracks | {
        ObjectId("", "Service", lab.namespace, name) for name in services
    }, "sync leaves the workload, its tracks and the Services to the executor"
    colours = {ObjectId("apps", "Deployment", lab.namespace, f"web-{colour}") for colour in ("blue", "green")}
    assert colours <= inventories.load(lab.store, KEY, lab.namespace).objects, "the colours are inventoried"
    assert lab.replicas("web-blue") == 0 and lab.ready("web-green") == REPLICAS
    assert lab.state()["activeColor"] == "green"


def test_blue_green_rolls_out_a_changed_selector_to_the_empty_colour(lab: Lab) -> None:
    """A Deployment's selector is immutable, but blue-green runs the new version in the other colour, which sits at
    zero: it is made again under the new selector, and the switch points the active Service at it."""
    rollout = blue_green(scaleDownDelaySeconds=0)
    services = ("web", "web-preview")
    released(lab, rollout, services=services)
    lab.drive(app(lab.namespace, "v2", rollout, services=services), lambda o: o.phase is Phase.HEALTHY)
    assert lab.replicas("web-blue") == 0, "the old colour waits at zero"
    v3 = app(lab.namespace, "v3", rollout, services=services)
    for manifest in v3.manifests:
        if manifest.id.kind == "Service":
            manifest.body["spec"]["selector"]["tier"] = "web"
        else:
            manifest.body["spec"]["selector"]["matchLabels"]["tier"] = "web"
            manifest.body["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    lab.drive(v3, lambda o: o.phase is Phase.HEALTHY)
    assert lab.selector("web") == {"app": "web", "tier": "web", "gitsync.dev/color": "blue"}
    assert lab.deploy("web-blue")["spec"]["selector"]["matchLabels"]["tier"] == "web"  # type: ignore[index]
    lab.wait("only v3 serves", lambda: lab.versions() == {"v3": REPLICAS})


def test_blue_green_post_promotion_failure_switches_back(lab: Lab, metrics) -> None:
    rollout = blue_green(
        postPromotionAnalysis={
            "checks": [
                {
                    "name": "error-rate",
                    "type": "prometheus",
                    "address": metrics.address,
                    "query": metrics.query("errors_ratio"),
                    "interval": "1s",
                    "count": 2,
                    "successCondition": "result[0] < 0.05",
                }
            ]
        }
    )
    services = ("web", "web-preview")
    released(lab, rollout, services=services)
    metrics.set("errors_ratio", 0.3)
    metrics.wait_for("errors_ratio", 0.3)
    v2 = app(lab.namespace, "v2", rollout, services=services)
    out = lab.drive(v2, lambda o: o.phase in (Phase.ABORTED, Phase.HEALTHY), timeout=60)
    assert out.phase is Phase.ABORTED
    assert lab.selector("web")["gitsync.dev/color"] == "blue"
    assert lab.state()["abortReason"] == "postPromotionAnalysis failed: error-rate"
    lab.wait("green scaled down", lambda: lab.replicas("web-green") == 0 and lab.ready("web-blue") == REPLICAS)


def test_rollout_state_is_a_configmap_part(lab: Lab) -> None:
    released(lab, CANARY)
    doc, _ = lab.store.load(KEY, lab.namespace, PART)
    assert doc["state"]["phase"] == "Healthy"


def test_app_switching_to_blue_green_never_serves_the_preview_from_its_active_service(lab: Lab) -> None:
    for body in (deployment(lab.namespace, "v1"), service(lab.namespace, "web"), service(lab.namespace, "web-preview")):
        lab.cluster.apply(body)  # what sync applied while the app used the rolling strategy
    lab.wait("v1 Ready", lambda: lab.ready("web") == REPLICAS)
    rollout = blue_green(scaleDownDelaySeconds=1)
    v2 = app(lab.namespace, "v2", rollout, services=("web", "web-preview"))
    active: list[set[str]] = []

    def serving(_: StepOutcome) -> None:
        """The versions behind the active Service's selector, as its endpoints would have them."""
        selector = ",".join(f"{k}={v}" for k, v in lab.selector("web").items())
        active.append({p["metadata"]["labels"]["version"] for p in lab.pods(selector)})

    lab.drive(v2, lambda o: o.phase is Phase.PROMOTING, each=serving)
    assert lab.selector("web") == {"app": "web", "gitsync.dev/color": "green"}
    switched = active.index({"v2"})
    assert all(versions <= {"v1"} for versions in active[:switched]), f"preview served before the switch: {active}"
    blue = lab.deploy("web-blue")
    assert blue["spec"]["template"]["metadata"]["labels"]["version"] == "v1", "blue is v1's copy"
    assert blue["metadata"]["annotations"]["gitsync.dev/template-hash"].startswith("live:"), "a copy says of what"
    lab.drive(v2, lambda o: o.phase is Phase.HEALTHY)
    assert (lab.replicas("web"), lab.replicas("web-blue"), lab.ready("web-green")) == (0, 0, REPLICAS)
    lab.wait("only v2", lambda: lab.versions() == {"v2": REPLICAS})
    assert lab.events("StableColoured")


def test_promote_full_skips_the_remaining_steps(lab: Lab) -> None:
    released(lab, PAUSES)
    v2 = app(lab.namespace, "v2", PAUSES)
    lab.drive(v2, lambda o: lab.state()["step"] == 1)
    control.request(lab.store, KEY, lab.namespace, CommandName.PROMOTE_FULL, lab.clock.now(), "test")
    lab.step(v2)
    assert lab.state()["step"] == len(PAUSES["canary"]["steps"]), "the remaining steps are skipped"
    lab.drive(v2, lambda o: o.phase is Phase.HEALTHY)
    lab.wait("only v2", lambda: lab.versions() == {"v2": REPLICAS})


def test_canary_goes_with_its_stable_deployment_when_that_is_deleted_mid_rollout(lab: Lab) -> None:
    released(lab, CANARY)
    lab.drive(app(lab.namespace, "v2", CANARY), lambda o: lab.ready("web-canary") > 0)
    canary = lab.deploy("web-canary")
    assert canary is not None
    owners = canary["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("Deployment", "web", lab.deploy("web")["metadata"]["uid"])
    ]

    # The Deployment leaves the render mid-rollout and prune deletes it (background propagation, as prune does):
    # the canary and its pods must not stay behind serving under the app's labels.
    lab.cluster.delete(ObjectId("apps", "Deployment", lab.namespace, "web"))
    gone = lab.wait("canary collected", lambda: lab.deploy("web-canary") is None and not lab.pods(), timeout=60)
    print(f"\nstable deleted mid-rollout -> canary and every pod gone: {gone:.1f}s")


ROLLING = {"strategy": "rolling"}


def test_canary_dropped_mid_rollout_hands_over_to_a_rolling_update_without_losing_capacity(lab: Lab) -> None:
    released(lab, PAUSES)
    lab.drive(app(lab.namespace, "v2", PAUSES), lambda o: o.phase is Phase.PAUSED)
    assert (lab.replicas("web"), lab.ready("web-canary")) == (REPLICAS // 2, REPLICAS // 2)

    # The next commit drops the canary and ships v3: Kubernetes rolls `web`, the canary serves until that is done.
    v3 = app(lab.namespace, "v3", ROLLING)
    capacity: list[int] = []
    out = lab.drive(v3, lambda o: o.settled, each=lambda o: capacity.append(lab.ready("web") + lab.ready("web-canary")))
    assert min(capacity) >= REPLICAS // 2 + REPLICAS // 2, "the hand-over dropped Ready capacity"
    assert out.exclude == frozenset() and out.requeue_after is None
    assert lab.deploy("web-canary") is None
    lab.wait("only v3", lambda: lab.versions() == {"v3": REPLICAS})
    state = lab.state()
    assert (state["history"][-1]["outcome"], state["history"][-1]["reason"]) == (
        "superseded",
        "strategy changed from canary to rolling",
    )
    assert lab.events("StrategyChanged") and lab.events("LeftoversRemoved")
    before = sum(lab.cluster.requests.values())
    assert lab.step(v3).settled and sum(lab.cluster.requests.values()) - before == 1, "settled: one state read"


def test_blue_green_dropped_hands_over_to_the_rendered_deployment_and_removes_both_colours(lab: Lab) -> None:
    rollout = blue_green(scaleDownDelaySeconds=1)
    services = ("web", "web-preview")
    released(lab, rollout, services=services)
    lab.drive(app(lab.namespace, "v2", rollout, services=services), lambda o: o.phase is Phase.HEALTHY)
    assert lab.deploy("web-blue") is not None and lab.ready("web-green") == REPLICAS

    v2 = app(lab.namespace, "v2", ROLLING, services=services)
    first = lab.step(v2)
    colours = {ObjectId("apps", "Deployment", lab.namespace, f"web-{colour}") for colour in ("blue", "green")}
    assert first.exclude == {ObjectId("apps", "Deployment", lab.namespace, "web")} | colours, "sync leaves them to it"
    assert lab.ready("web-green") == REPLICAS, "the active colour serves until `web` is Ready"
    shown = rollout_lines(lab.state())  # what `gitsync status` prints meanwhile
    assert shown[0].startswith("rollout: rolling update: web ") and shown[1] == "  retiring: web-blue, web-green"
    lab.drive(v2, lambda o: o.settled)
    assert rollout_lines(lab.state()) == [], "a settled rolling app shows no rollout"
    assert lab.deploy("web-blue") is None and lab.deploy("web-green") is None
    assert not colours & inventories.load(lab.store, KEY, lab.namespace).objects, "removed tracks leave the inventory"
    assert lab.ready("web") == REPLICAS
    lab.wait("only v2", lambda: lab.versions() == {"v2": REPLICAS})


def test_agent_reads_a_rolling_apps_rollout_state_once_until_its_strategy_changes(lab: Lab) -> None:
    driver = RolloutExecutor(lab.cluster, lab.store)

    def requests(target: App) -> int:
        before = sum(lab.cluster.requests.values())
        driver.advance_rollout(target, now=lab.clock.now())
        return sum(lab.cluster.requests.values()) - before

    lab.store.load(KEY, lab.namespace, PART)  # API discovery, so the counts below are the driver's own
    rolling = app(lab.namespace, "v1", ROLLING)
    assert [requests(rolling) for _ in range(3)] == [1, 0, 0]
    assert requests(app(lab.namespace, "v1", CANARY)) > 1
    assert requests(rolling) >= 1, "back to rolling: the canary's state must be handed over"


def test_state_from_an_older_agent_finds_the_canary_by_its_labels(lab: Lab) -> None:
    released(lab, PAUSES)
    lab.drive(app(lab.namespace, "v2", PAUSES), lambda o: o.phase is Phase.PAUSED)
    doc, version = lab.store.load(KEY, lab.namespace, PART)
    for field_name in ("strategy", "workload", "retiring"):  # what an agent before this field wrote
        del doc["state"][field_name]
    lab.store.save(KEY, lab.namespace, PART, doc, version)

    # The rolling render has a second Deployment, so the workload cannot be told from the render alone.
    worker = deployment(lab.namespace, "v1", replicas=1)
    worker["metadata"]["name"] = "worker"
    v3 = app(lab.namespace, "v3", ROLLING)
    v3 = App(KEY, lab.namespace, (*v3.manifests, Manifest(ObjectId.of(worker), worker, "test")), v3.values, "v3")
    lab.drive(v3, lambda o: o.settled)
    assert lab.deploy("web-canary") is None
    assert lab.deploy("web")["spec"]["template"]["metadata"]["labels"]["version"] == "v3"
    assert lab.state()["history"][-1]["reason"] == "strategy changed from canary or blue-green to rolling"


def test_canary_of_a_chart_that_leaves_replicas_to_an_hpa_keeps_the_hpas_count(lab: Lab, kube_api) -> None:
    rollout = {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}]}}

    def autoscaled(version: str) -> App:
        body = deployment(lab.namespace, version)
        del body["spec"]["replicas"]  # `{% if not values.autoscaling.enabled %}replicas: ...{% endif %}`
        return App(KEY, lab.namespace, (Manifest(ObjectId.of(body), body, "test"),), {"rollout": rollout}, version)

    lab.step(autoscaled("v1"))
    # The HPA scales the stable Deployment (through the scale subresource, as its own field manager).
    client.AppsV1Api(kube_api).patch_namespaced_deployment_scale("web", lab.namespace, {"spec": {"replicas": 6}})
    lab.wait("6 Ready", lambda: lab.ready("web") == 6)
    assert lab.step(autoscaled("v1")).actions == (), "a reconcile must not scale the app back to the render's 1"
    lab.drive(autoscaled("v2"), lambda o: o.phase is Phase.HEALTHY, timeout=60)
    assert lab.replicas("web") == 6
    lab.wait("six v2 pods", lambda: lab.versions() == {"v2": 6})


def test_blue_green_aims_the_apps_hpa_at_the_active_colour(lab: Lab) -> None:
    rollout = blue_green(scaleDownDelaySeconds=1)
    services = ("web", "web-preview")
    hpa_ref = ObjectId("autoscaling", "HorizontalPodAutoscaler", lab.namespace, "web")

    def with_hpa(version: str, most: int = 8) -> App:
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": lab.namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": most,
            },
        }
        plain = app(lab.namespace, version, rollout, services=services)
        return App(KEY, lab.namespace, (*plain.manifests, Manifest(hpa_ref, hpa, "test")), plain.values, version)

    def hpa() -> Json:
        live = lab.cluster.get(hpa_ref)
        assert live is not None
        return live["spec"]

    first = lab.step(with_hpa("v1"))
    assert hpa_ref in first.exclude, "sync must not put the HPA back on `web`"
    assert hpa()["scaleTargetRef"]["name"] == "web-blue"
    lab.wait("v1 Ready", lambda: lab.ready("web-blue") == REPLICAS)
    lab.drive(with_hpa("v2"), lambda o: o.phase is Phase.HEALTHY, timeout=60)
    assert hpa()["scaleTargetRef"]["name"] == "web-green", "the HPA must follow the switch"
    lab.step(with_hpa("v2", most=10))  # a change to the HPA alone reaches the cluster
    assert (hpa()["maxReplicas"], hpa()["scaleTargetRef"]["name"]) == (10, "web-green")


def test_autoscaled_app_leaving_blue_green_keeps_its_count_through_the_hand_over_to_sync(lab: Lab, kube_api) -> None:
    services = ("web", "web-preview")

    def autoscaled(version: str, rollout: Mapping[str, Any]) -> App:
        plain = app(lab.namespace, version, rollout, services=services)
        del plain.manifests[0].body["spec"]["replicas"]  # the chart leaves replicas to an HPA
        return plain

    lab.step(autoscaled("v1", blue_green()))
    client.AppsV1Api(kube_api).patch_namespaced_deployment_scale("web-blue", lab.namespace, {"spec": {"replicas": 6}})
    lab.wait("6 Ready", lambda: lab.ready("web-blue") == 6)

    rolling = autoscaled("v1", ROLLING)
    capacity: list[int] = []
    lab.drive(rolling, lambda o: o.settled, each=lambda o: capacity.append(lab.ready("web") + lab.ready("web-blue")))
    assert min(capacity) >= 6 and lab.replicas("web") == 6 and lab.deploy("web-blue") is None
    # Sync takes `web` back and applies the render, which has no replicas: the count must survive it.
    lab.cluster.apply(rolling.manifests[0].body)
    assert lab.replicas("web") == 6, "sync's apply reset the replicas to the default of one"


def test_first_blue_green_rollout_keeps_serving_when_the_same_commit_changes_the_service_selector(lab: Lab) -> None:
    lab.cluster.apply(deployment(lab.namespace, "v1"))  # what sync applied under the rolling strategy
    lab.wait("v1 Ready", lambda: lab.ready("web") == REPLICAS)
    v2 = app(lab.namespace, "v2", blue_green(), services=("web", "web-preview"))
    for manifest in v2.manifests:
        if manifest.id.kind == "Service":
            manifest.body["spec"]["selector"]["tier"] = "frontend"  # pods of v1 do not carry it
        if manifest.id.kind == "Deployment":
            manifest.body["spec"]["template"]["metadata"]["labels"]["tier"] = "frontend"
    lab.drive(v2, lambda o: lab.state().get("activeColor") == "blue")
    assert lab.selector("web")["tier"] == "frontend"
    selector = ",".join(f"{k}={v}" for k, v in lab.selector("web").items())
    assert {p["metadata"]["labels"]["version"] for p in lab.pods(selector)} == {"v1"}, "the active Service is empty"
