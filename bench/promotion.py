#!/usr/bin/env python3
"""Promotion benchmark: from the end of staging's soak to the promoted release live in prod, and commits written.

    .venv/bin/python bench/promotion.py              start a private kubelab (or reuse $KUBELAB_KUBECONFIG), run
    .venv/bin/python bench/promotion.py --rounds 5 --soak 3

The agent (``gitsync run`` as a process) follows a bare repository made from example-repo with staging and prod
(prod: ``promotion: {from: staging, mode: auto, soak: N}``, both rolling so the rollout itself takes no time on
kwok). Each round commits a new image tag for staging, waits until staging's status says Succeeded and Healthy at
that commit (the release ended; the soak starts), then measures until the promotion commit is on the remote's
main, and until prod's Deployment runs the new tag and its status says Succeeded at the promotion commit. The
soak end is taken as the moment staging was seen Succeeded plus the soak, so a figure includes up to the
status-poll interval (0.05 s) of slack. It also counts the promotion commits per candidate (goal: exactly 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from agentlab import Agents, Upstream, status_of, wait_for  # noqa: E402
from kubernetes import client, config  # noqa: E402
from lab import start_lab, stop_lab  # noqa: E402
from latency import new_namespace  # noqa: E402


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def promotions_of(upstream: Upstream, source: str) -> int:
    log = git(upstream.bare, "log", "main", "--format=%(trailers:key=Gitsync-Promoted-From,valueonly)")
    return [line.strip() for line in log.splitlines()].count(source)


def image_of(apps: client.AppsV1Api, namespace: str) -> str:
    try:
        deployment = apps.read_namespaced_deployment("podinfo", namespace)
    except client.ApiException:
        return ""
    return str(deployment.spec.template.spec.containers[0].image).rpartition(":")[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--soak", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-promotion-") as tmp:
        root = Path(tmp)
        kubeconfig = os.environ.get("KUBELAB_KUBECONFIG")
        started = kubeconfig is None
        kube = Path(kubeconfig) if kubeconfig else start_lab(root / "lab")
        try:
            run(root, kube, args.rounds, args.soak)
        finally:
            if started:
                stop_lab(root / "lab")


def run(root: Path, kubeconfig: Path, rounds: int, soak: float) -> None:
    api = config.new_client_from_config(str(kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    staging = new_namespace(core, "bench-staging")
    prod = f"{staging}-prod"
    upstream = Upstream(root / "git", staging)
    env_file = upstream.work / "environments/prod/env.yaml"
    env = yaml.safe_load(env_file.read_text())
    env["namespace"] = prod
    env["promotion"] = {"from": "staging", "mode": "auto", "soak": f"{soak:g}s", "values": ["image.tag"]}
    values_file = upstream.work / "environments/prod/values/podinfo.yaml"
    values = yaml.safe_load(values_file.read_text())
    values.update(replicas=2, rollout={"strategy": "rolling"})
    upstream.commit(
        "bench: prod promoted from staging",
        {
            "environments/prod/env.yaml": yaml.safe_dump(env),
            "environments/prod/values/podinfo.yaml": yaml.safe_dump(values),
        },
    )
    agents = Agents(root / "agents", kubeconfig, upstream)
    try:
        agents.start(environments=["staging", "prod"], pollInterval="1s")
        wait_for("the first promotion", lambda: image_of(apps, prod) == "6.7.1", 120)
        to_commit, to_live, commits = [], [], []
        for n in range(rounds):
            git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
            tag = f"6.8.{n}"
            path = upstream.work / "environments/staging/values/podinfo.yaml"
            staged = yaml.safe_load(path.read_text())
            staged["image"]["tag"] = tag
            revision = upstream.commit(
                f"podinfo {tag}", {"environments/staging/values/podinfo.yaml": yaml.safe_dump(staged)}
            )

            def ended(revision: str = revision) -> bool:
                s = status_of(core, staging)
                return (s.get("lastAppliedRevision"), s.get("result"), s.get("health")) == (
                    revision,
                    "Succeeded",
                    "Healthy",
                )

            wait_for("staging succeeded", ended, 60, 0.05)
            soak_end = time.monotonic() + soak
            source = f"staging@{revision}"
            wait_for("the promotion commit", lambda source=source: promotions_of(upstream, source), 60, 0.05)
            to_commit.append(time.monotonic() - soak_end)

            def live(tag: str = tag) -> bool:
                s = status_of(core, prod, env="prod")
                return image_of(apps, prod) == tag and s.get("result") == "Succeeded"

            wait_for("prod live", live, 60, 0.05)
            to_live.append(time.monotonic() - soak_end)
            commits.append(promotions_of(upstream, source))
            print(f"round {n + 1}: soak end -> commit {to_commit[-1]:.2f}s, -> prod live {to_live[-1]:.2f}s")
        print(
            f"soak end -> promotion commit: median {statistics.median(to_commit):.2f}s, max {max(to_commit):.2f}s; "
            f"-> live in prod: median {statistics.median(to_live):.2f}s, max {max(to_live):.2f}s (goal <= 5 s); "
            f"promotion commits per candidate: {sorted(set(commits))} (goal: exactly 1)"
        )
    finally:
        agents.stop_all()
        for namespace in (staging, prod):
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(namespace)


if __name__ == "__main__":
    main()
