#!/usr/bin/env python3
"""Sharding benchmark: 1,000 app-envs (one ConfigMap each) across three ``gitsync run`` replicas in kubelab.

    .venv/bin/python bench/shards.py          start a private kubelab (or reuse $KUBELAB_KUBECONFIG), run, print
    .venv/bin/python bench/shards.py --apps 200     fewer app-envs (a machine too busy for 1,000)

Three real agent processes follow one bare Git repository with ``sharding: {shards: 3}`` (default Lease timing:
15 s lease, renewed every 5 s). Figures:

1. first sync: from the replicas' start until all 1,000 ConfigMaps exist;
2. a commit touching every app: from the push until all 1,000 ConfigMaps carry the new value (goal <= 60 s);
3. no app-env reconciled by two replicas at once: from every replica's ``reconcile.done`` log lines;
4. a replica killed with SIGKILL: from the kill until another replica holds its shard Leases, and until every
   app-env of those shards has been reconciled by another replica (goal <= lease duration + 5 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from gitsync.adapters.kube import KubeCluster
from gitsync.model import AppEnv, ObjectId
from gitsync.runtime.shards import shard_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import start_lab, stop_lab

ROOT = Path(__file__).resolve().parent.parent
GITSYNC = Path(sys.executable).with_name("gitsync")
APPS = 1000
REPLICAS = 3
LEASE = 15.0
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
TEMPLATE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ chart.name }}\ndata:\n  value: {{ values.value }}\n"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV, "HOME": str(cwd)}, check=True,
                   capture_output=True, timeout=120)  # fmt: skip


def write_apps(work: Path, namespace: str, value: str, apps: int) -> None:
    for i in range(apps):
        chart = work / "apps" / f"app{i:04d}"
        (chart / "templates").mkdir(parents=True, exist_ok=True)
        (chart / "chart.yaml").write_text(f"name: app{i:04d}\nversion: 0.1.0\n")
        (chart / "values.yaml").write_text(f"value: {value}\n")
        (chart / "templates" / "cm.yaml").write_text(TEMPLATE)
    env = work / "environments" / "bench"
    env.mkdir(parents=True, exist_ok=True)
    names = [f"app{i:04d}" for i in range(apps)]
    (env / "env.yaml").write_text(yaml.safe_dump({"namespace": namespace, "apps": names}))


def commit(work: Path, namespace: str, value: str, apps: int) -> None:
    write_apps(work, namespace, value, apps)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"every app says {value}")
    git(work, "push", "-q", "origin", "main")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def values(cluster: KubeCluster, namespace: str) -> dict[str, str]:
    items = cluster.list("", "ConfigMap", namespace, "gitsync.dev/env=bench").items
    return {str(cm["metadata"]["name"]): str((cm.get("data") or {}).get("value", "")) for cm in items}


def wait(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    sys.exit(f"bench: timed out after {timeout:g}s waiting for {what}")


def holders(cluster: KubeCluster, namespace: str) -> list[str]:
    out = []
    for i in range(REPLICAS):
        lease = cluster.get(ObjectId("coordination.k8s.io", "Lease", namespace, f"gitsync-leader-shard-{i}")) or {}
        out.append(str((lease.get("spec") or {}).get("holderIdentity") or ""))
    return out


def reconciles(log: Path, replica: str) -> list[tuple[str, float, float, str]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "reconcile.done":
            out.append((str(record["app"]), float(record["started_at"]), float(record["finished_at"]), replica))
    return out


def overlaps(runs: list[tuple[str, float, float, str]]) -> int:
    """Pairs of reconciles of one app-env by two replicas whose spans intersect."""
    count = 0
    for _, group in itertools.groupby(sorted(runs), key=lambda run: run[0]):
        spans = sorted(group, key=lambda run: run[1])
        for a, b in itertools.pairwise(spans):
            count += a[3] != b[3] and b[1] < a[2]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=APPS, help="app-envs (one ConfigMap each)")
    apps = parser.parse_args().apps
    reuse = os.environ.get("KUBELAB_KUBECONFIG")
    state = Path(tempfile.mkdtemp(prefix="bench-shards-lab-"))
    kubeconfig = Path(reuse) if reuse else start_lab(state)
    work_root = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    suffix = secrets.token_hex(3)
    namespace, agents_ns = f"bench-shards-{suffix}", f"bench-shards-agents-{suffix}"
    cluster = KubeCluster(kubeconfig)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (namespace, agents_ns):
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        bare, work = work_root / "repo.git", work_root / "work"
        git(work_root, "init", "-q", "--bare", "-b", "main", str(bare))
        work.mkdir()
        git(work, "init", "-q", "-b", "main")
        git(work, "remote", "add", "origin", str(bare))
        commit(work, namespace, "v1", apps)

        logs = {}
        for n in range(REPLICAS):
            name = f"replica-{n}"
            config = {
                "repo": {"url": f"file://{bare}", "branch": "main"},
                "environments": ["bench"],
                "pollInterval": "1s",
                "driftInterval": "30m",
                "listen": f"127.0.0.1:{free_port()}",
                "kubeconfig": str(kubeconfig),
                "cacheDir": str(work_root / f"cache-{name}"),
                "workers": 32,
                "sharding": {"shards": REPLICAS},
                "leaderElection": {"namespace": agents_ns, "identity": name, "leaseDuration": f"{LEASE:g}s"},
            }
            path = work_root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            logs[name] = work_root / f"{name}.log"
            with logs[name].open("wb") as out:
                processes.append(subprocess.Popen(
                    [str(GITSYNC), "run", "--config", str(path), "--log-format", "json"], stdout=out,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip
        print(f"bench: {apps} app-envs, {REPLICAS} replicas, lease {LEASE:g}s; kubelab {cluster.server}")

        def live(value: str) -> bool:
            count = list(values(cluster, namespace).values()).count(value)
            print(f"\r  {count}/{apps} say {value}", end="", file=sys.stderr, flush=True)
            return count == apps

        first = wait("the first sync", lambda: live("v1"), 900)
        commit(work, namespace, "v2", apps)
        touched = wait("the commit live", lambda: live("v2"), 600)
        held = holders(cluster, agents_ns)
        runs = list(itertools.chain.from_iterable(reconciles(logs[r], r) for r in logs))
        print(f"{f'first sync, {apps} app-envs':<46} {first:6.1f}s")
        verdict = "meets" if touched <= 60 else "misses"
        print(f"{'commit touching all -> all live':<46} {touched:6.1f}s  ({verdict} goal <= 60s)")
        print(f"{'shard Leases held by':<46} {', '.join(held)}")
        print(f"{'reconciled by two replicas at once':<46} {overlaps(runs)} times  (goal 0)")

        victim = held[0]
        lost = {i for i, holder in enumerate(held) if holder == victim}
        keys = [f"app{i:04d}" for i in range(apps) if shard_of(AppEnv(f"app{i:04d}", "bench"), REPLICAS) in lost]
        process = processes[int(victim.rpartition("-")[2])]
        killed_at = time.time()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        taken = wait("the shard taken over", lambda: victim not in holders(cluster, agents_ns), 120)

        def all_reconciled_elsewhere() -> bool:
            done = {
                app
                for replica, log in logs.items()
                if replica != victim
                for app, _, finished, _ in reconciles(log, replica)
                if finished >= killed_at
            }
            return set(keys) <= done

        wait("the killed replica's app-envs reconciled by others", all_reconciled_elsewhere, 300)
        last = max(
            finished
            for replica, log in logs.items()
            if replica != victim
            for app, _, finished, _ in reconciles(log, replica)
            if finished >= killed_at and app in set(keys)
        )
        runs = list(itertools.chain.from_iterable(reconciles(logs[r], r) for r in logs))
        goal = LEASE + 5
        print(f"{'replica killed -> its shard Lease taken':<46} {taken:6.1f}s")
        over = last - killed_at
        verdict = "meets" if over <= goal else "misses"
        print(f"{f'-> its {len(keys)} app-envs reconciled by another':<46} {over:6.1f}s  ({verdict} goal <= {goal:g}s)")
        print(f"{'reconciled by two replicas at once (all)':<46} {overlaps(runs)} times  (goal 0)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        for ns in (namespace, agents_ns):
            cluster.delete(ObjectId("", "Namespace", "", ns))
        shutil.rmtree(work_root, ignore_errors=True)
        if not reuse:
            stop_lab(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
