"""The agent when the environment's namespace is deleted under it: while it is Terminating every reconcile fails
as worth retrying (never parked, never a crash), and once it is gone the agent creates it anew and syncs again."""

from __future__ import annotations

from agentlab import Agents, Upstream, configmap_value, settled, wait_for
from kubernetes import client

HOLD = "example.com/hold"


def test_a_namespace_deleted_under_the_agent_fails_transiently_then_is_created_anew(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    agent = agents.start(pollInterval="1s")
    settled(core, namespace)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "holder", "finalizers": [HOLD]}})
    core.delete_namespace(namespace)
    wait_for("the namespace emptied but the holder", lambda: configmap_value(core, namespace) is None, 60)

    upstream.set_message("while terminating")
    wait_for(
        "reconciles refused by the terminating namespace, retried (worth retrying, not parked)",
        lambda: len([e for e in agent.logs("reconcile.failed") if "being terminated" in e["error"]]) >= 2,
        60,
    )
    assert not agent.logs("reconcile.crashed")

    core.patch_namespaced_config_map("holder", namespace, {"metadata": {"finalizers": None}})
    wait_for("the namespace gone", lambda: namespace not in {n.metadata.name for n in core.list_namespace().items}, 60)
    # Retried with backoff; a new commit starts at once (a fix never waits behind a failing commit).
    revision = upstream.set_message("after the deletion")
    wait_for(
        "the app live in the namespace created anew",
        lambda: configmap_value(core, namespace) == "after the deletion",
        60,
    )
    settled(core, namespace, revision)
