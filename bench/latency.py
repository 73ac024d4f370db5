#!/usr/bin/env python3
"""Agent benchmark: push-to-live latency by webhook, and memory over 1,000 polls with 1,000 managed objects.

    .venv/bin/python bench/latency.py             start a private kubelab (or reuse $KUBELAB_KUBECONFIG), run, print
    .venv/bin/python bench/latency.py --pushes 20 --polls 1000 --objects 1000

1. latency: the agent (``gitsync run`` as a process, poll interval 10 min so only the webhook can trigger) follows a
   bare repo made from example-repo; each round commits a new ConfigMap value, pushes, sends a signed GitHub
   webhook and measures until the new value is readable from the API server. p50 and p95 (goal: p50 <= 1 s).
2. memory: a second agent manages example-repo plus 1,000 extra ConfigMaps, polls every 0.1 s; RSS (VmRSS) is
   read after the first sync, after 100 polls and after ``--polls`` polls (goal: <= 150 MB and not growing).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from agentlab import Agents, Upstream, configmap_value, settled, wait_for  # noqa: E402
from kubernetes import client, config  # noqa: E402
from lab import start_lab, stop_lab  # noqa: E402


def new_namespace(core: client.CoreV1Api, stem: str) -> str:
    name = f"{stem}-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for("default ServiceAccount", lambda: _has_default_sa(core, name), 30)
    return name


def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except client.ApiException:
        return False
    return True


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latency(kubeconfig: Path, core: client.CoreV1Api, work: Path, pushes: int) -> None:
    namespace = new_namespace(core, "bench-latency")
    upstream = Upstream(work / "latency-git", namespace)
    agents = Agents(work / "latency-agents", kubeconfig, upstream)
    try:
        agent = agents.start("latency", pollInterval="10m")
        wait_for("first sync", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
        settled(core, namespace)
        samples = []
        for n in range(pushes):
            message = f"bench {n}"
            revision = upstream.set_message(message, push=False)
            started = time.monotonic()
            upstream.push()
            assert agent.push_webhook(revision) == 202
            wait_for(f"{message} live", lambda m=message: configmap_value(core, namespace) == m, 30, 0.01)
            samples.append(time.monotonic() - started)
            settled(core, namespace, revision)
        samples.sort()
        p50 = statistics.median(samples)
        p95 = samples[min(len(samples) - 1, round(0.95 * len(samples)) - 1)]
        print(
            f"latency: git push + webhook -> ConfigMap value live, {pushes} pushes: p50 {p50:.3f} s, p95 {p95:.3f} s, "
            f"max {samples[-1]:.3f} s (goal p50 <= 1 s: {'met' if p50 <= 1 else 'NOT met'})"
        )
    finally:
        agents.stop_all()
        core.delete_namespace(namespace)


def memory(kubeconfig: Path, core: client.CoreV1Api, work: Path, polls: int, objects: int, apps: int = 1) -> None:
    """``objects`` more ConfigMaps: in podinfo's chart (``apps`` 1), or spread over ``apps - 1`` more plain apps of
    staging, so the agent serves ``apps`` app-envs."""
    namespace = new_namespace(core, "bench-memory")
    upstream = Upstream(work / "memory-git", namespace)

    def many(stem: str, count: int) -> str:
        return "".join(
            f'---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {stem}-{n}\ndata:\n  n: "{n}"\n'
            for n in range(count)
        )

    if apps == 1:
        upstream.commit(f"{objects} more objects", {"apps/podinfo/templates/bench.yaml": many("bench", objects)})
    else:
        bulk = [f"bulk-{i:02d}" for i in range(1, apps)]
        share = objects // len(bulk)
        upstream.commit(f"{objects} more objects", {f"apps/{a}/manifests/bulk.yaml": many(a, share) for a in bulk})
        upstream.set_environment(f"{apps} apps", apps=["podinfo", *bulk])
    agents = Agents(work / "memory-agents", kubeconfig, upstream)
    try:
        started = time.monotonic()
        agent = agents.start("memory", pollInterval="100ms")
        settled(core, namespace, timeout=600)
        wait_for(
            f"{objects} ConfigMaps",
            lambda: len(core.list_namespaced_config_map(namespace).items) >= objects,
            600,
            1,
        )
        assert agent.process is not None
        pid = agent.process.pid
        print(
            f"memory: first sync of {objects + 4} objects in {apps} app-envs took {time.monotonic() - started:.1f} s; "
            f"RSS {rss_mb(pid):.1f} MB"
        )
        base = agent.metric("gitsync_git_polls_total")
        checkpoints = sorted({min(100, polls), polls})
        readings = []
        for mark in checkpoints:
            wait_for(f"{mark} polls", lambda m=mark: agent.metric("gitsync_git_polls_total") - base >= m, polls, 0.5)
            readings.append((mark, rss_mb(pid)))
        text = ", ".join(f"after {mark} polls {mb:.1f} MB" for mark, mb in readings)
        growth = readings[-1][1] - readings[0][1]
        peak = max(mb for _, mb in readings)
        print(
            f"memory: {text}; growth {growth:+.1f} MB (goal <= 150 MB, not growing: "
            f"{'met' if peak <= 150 and growth < 5 else 'NOT met'})"
        )
    finally:
        agents.stop_all()
        core.delete_namespace(namespace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--apps", type=int, default=1, help="app-envs the memory agent serves")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-") as tmp:
        work = Path(tmp)
        reuse = os.environ.get("KUBELAB_KUBECONFIG")
        kubeconfig = Path(reuse) if reuse else start_lab(work / "kubelab")
        try:
            core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
            latency(kubeconfig, core, work, args.pushes)
            if not args.skip_memory:
                memory(kubeconfig, core, work, args.polls, args.objects, args.apps)
        finally:
            if not reuse:
                stop_lab(work / "kubelab")


if __name__ == "__main__":
    main()
