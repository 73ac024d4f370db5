"""Notifications from the agent as a process: a release that succeeds and a commit that fails to render reach a
receiver on 127.0.0.1, each once and signed, while another receiver hangs and a third refuses connections; after a
kill -9, the next agent sends what was still due and nothing twice."""

from __future__ import annotations

import json
import socket
import time
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


def test_a_failure_and_a_success_reach_the_receiver_once_while_another_hangs_and_a_restart_sends_nothing_twice(
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
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
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
        "the render error in status", lambda: status_of(core, namespace).get("lastAttemptedRevision") == broken, 60
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
    # The agent logs a delivery once the receiver has answered, a moment after the receiver has it.
    sent = wait_for(
        "ops's two notify.sent lines",
        lambda: len(s := [line for line in agent.logs("notify.sent") if line.get("receiver") == "ops"]) >= 2 and s,
        60,
    )
    assert len(sent) == 2
    assert KEY.decode() not in agent.log_path.read_text()

    # The outbox in the cluster: what a restarted agent would still send (the hanging receiver's), and the keys
    # that stop it from sending the rest again.
    # ops's deliveries are struck from it after they were answered: wait for the second one's to be written.
    def outbox() -> dict[str, list[str]]:
        stored = core.read_namespaced_config_map("gitsync.podinfo.staging.notify", namespace).data["notify.json"]
        return {n["key"]: n["pending"] for n in json.loads(stored)["notices"]}

    wait_for("ops's deliveries struck from the outbox", lambda: all("ops" not in n for n in outbox().values()), 60)
    pending = outbox()
    assert {d.headers["Idempotency-Key"] for d in got} <= set(pending)
    assert all("ops" not in names and "hanging" in names for names in pending.values()), pending

    # kill -9; the next agent has the hanging receiver's name pointed at one that answers: it gets what was due to
    # it (with the keys ops got for the same events), ops gets nothing again, and "closed", no longer configured,
    # is skipped.
    agent.kill()
    later = receiving()
    agents.start(
        "restarted",
        notifications=[
            {"name": "hanging", "url": later.url, **receiver},
            {"name": "ops", "url": hook.url, "events": ["succeeded", "sync-failed"], **receiver},
        ],
    )
    resent = later.wait(len(pending))
    time.sleep(1.0)  # room for a wrong repeat to reach either receiver before counting
    assert sorted(d.headers["Idempotency-Key"] for d in later.got) == sorted(pending)
    assert all(signed(d, KEY) for d in resent)
    assert len(hook.got) == 2, "nothing sent twice to ops"
