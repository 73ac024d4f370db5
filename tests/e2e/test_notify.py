"""Notifications from the agent as a process: a release that succeeds and a commit that fails to render reach a
receiver on 127.0.0.1, each once and signed, while another receiver hangs and a third refuses connections."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

from agentlab import Agents, Upstream, configmap_value, settled, status_of, wait_for
from kubernetes import client
from notifylab import Receiving, signed

KEY = b"e2e-notify-key"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failure_and_a_success_reach_the_receiver_once_while_another_hangs(
    agents: Agents,
    upstream: Upstream,
    namespace: str,
    core: client.CoreV1Api,
    receiving: Callable[..., Receiving],
    tmp_path: Path,
) -> None:
    hook, hanging = receiving(), receiving(hang=True)
    (tmp_path / "notify-key").write_bytes(KEY)
    receiver = {"secretFile": str(tmp_path / "notify-key")}
    agent = agents.start(
        notifications=[
            {"name": "hanging", "url": hanging.url, **receiver},
            {"name": "closed", "url": f"http://127.0.0.1:{closed_port()}/hook", **receiver},
            {"name": "ops", "url": hook.url, "events": ["succeeded", "sync-failed"], **receiver},
        ]
    )
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 20)
    first = settled(core, namespace)["lastAppliedRevision"]
    (success,) = hook.wait(1)
    assert success.json["event"] == "succeeded" and success.json["revision"] == first
    hanging.wait(1)

    template = upstream.work / "apps/podinfo/templates/configmap.yaml"
    broken = upstream.commit(
        "Break the template",
        {"apps/podinfo/templates/configmap.yaml": template.read_text().replace("values.config", "values.no_such_key")},
    )
    wait_for(
        "the render error in status", lambda: status_of(core, namespace).get("lastAttemptedRevision") == broken, 10
    )
    got = hook.wait(2)
    assert hanging.hang is not None and not hanging.hang.is_set(), "all this while the hanging receiver still hangs"

    assert [d.json["event"] for d in got] == ["succeeded", "sync-failed"]
    failure = got[1].json
    assert (failure["app"], failure["env"], failure["namespace"], failure["revision"]) == (
        "podinfo",
        "staging",
        namespace,
        broken,
    )
    assert "apps/podinfo/templates/configmap.yaml:" in failure["message"]
    assert all(signed(d, KEY) for d in got)
    assert len({d.headers["Idempotency-Key"] for d in got}) == 2
    sent = [line for line in agent.logs("notify.sent") if line.get("receiver") == "ops"]
    assert len(sent) == 2
    assert KEY.decode() not in agent.log_path.read_text()

    # The outbox in the cluster: what a restarted agent would still send (the hanging receiver's), and the keys
    # that stop it from sending the rest again.
    outbox = json.loads(
        core.read_namespaced_config_map("gitsync.podinfo.staging.notify", namespace).data["notify.json"]
    )
    pending = {n["event"]: n["pending"] for n in outbox["notices"]}
    assert {"succeeded", "sync-failed"} <= set(pending)
    assert all("ops" not in names and "hanging" in names for names in pending.values()), pending
