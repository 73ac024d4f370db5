"""Promotion staging -> prod through Git, with the agent as a process, a real bare repository and kubelab.

One scenario, as a team lives it: a release reaches staging at once and prod only once staging verified it and it
soaked, by one promotion commit with its evidence; a crash-looping release in staging is never promoted; a release
that passed staging but fails in prod is rolled back in the cluster and in Git; a pin edited by hand to a commit
staging never verified is Blocked; `gitsync audit` on a fresh clone tells all of it from Git alone.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from agentlab import GITSYNC, IDENTITY, Agents, Upstream, configmap_value, event_reasons, status_of, wait_for
from kubernetes import client

SOAK = 4.0
PROD_CANARY = {
    "analysis": {"interval": "1s", "checks": [{"name": "pods", "type": "podHealth", "maxRestarts": 0}]},
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"analysis": {"checks": ["pods"]}}]},
}
CRASH_IN_PROD = """\
{% if env.name == "prod" and values.image.tag == "6.7.3" %}
        gitsync.dev/fault: crashloop
{% endif %}
"""
"""A chart change that passes staging and crash-loops only in prod (kwok reads the label)."""
MOTTO = "{% macro motto() %}shared helpers v1{% endmacro %}\n"
"""``lib/_shared.j2``: a helper every chart may use; the ConfigMap ``shared`` shows what it says."""
SHARED = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n"
    'data:\n  PODINFO_UI_MESSAGE: {{ include("shared.motto") | quote }}\n'
)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**IDENTITY, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, check=True, timeout=30)  # fmt: skip
    return done.stdout.strip("\n")


def promotions(upstream: Upstream, trailer: str = "Gitsync-Promoted-From") -> list[dict[str, str]]:
    """Commits on the remote's main carrying ``trailer``: sha, subject and their trailers."""
    out = git(upstream.bare, "log", "main", "--format=%H%x1f%s%x1f%(trailers:unfold)%x1e")
    found = []
    for record in out.split("\x1e"):
        if not record.strip():
            continue
        sha, subject, trailers = record.strip("\n").split("\x1f")
        pairs = dict(line.split(": ", 1) for line in trailers.splitlines() if ": " in line)
        if trailer in pairs:
            found.append({"sha": sha, "subject": subject, **pairs})
    return found


def image_of(apps: client.AppsV1Api, namespace: str) -> str:
    try:
        deployment = apps.read_namespaced_deployment("podinfo", namespace)
    except client.ApiException as e:
        if e.status == 404:
            return ""
        raise
    return str(deployment.spec.template.spec.containers[0].image).rpartition(":")[2]


def release(
    upstream: Upstream, tag: str, labels: dict[str, str] | None = None, files: dict[str, str] | None = None
) -> str:
    path = upstream.work / "environments/staging/values/podinfo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"], values["podLabels"] = tag, labels or {}
    return upstream.commit(
        f"podinfo {tag}", {str(path.relative_to(upstream.work)): yaml.safe_dump(values), **(files or {})}
    )


def test_a_release_reaches_prod_only_through_a_verified_promotion_commit(
    agents: Agents, upstream: Upstream, namespace: str, prod_namespace: str, core: client.CoreV1Api,
    kube_api: client.ApiClient, tmp_path: Path,
) -> None:  # fmt: skip
    apps = client.AppsV1Api(kube_api)
    prod = upstream.work / "environments/prod"
    env = yaml.safe_load((prod / "env.yaml").read_text())
    env["namespace"] = prod_namespace
    env["promotion"] = {"from": "staging", "mode": "auto", "soak": f"{SOAK:g}s", "values": ["image.tag"]}
    values = yaml.safe_load((prod / "values/podinfo.yaml").read_text())
    values.update(replicas=2, rollout={"strategy": "canary", **PROD_CANARY})
    settings = {
        "environments/prod/env.yaml": yaml.safe_dump(env),
        "environments/prod/values/podinfo.yaml": yaml.safe_dump(values),
        "lib/_shared.j2": MOTTO,
        "apps/podinfo/templates/shared.yaml": SHARED,
    }
    first = upstream.commit("prod: promoted from staging", settings)
    agent = agents.start(environments=["staging", "prod"], pollInterval="1s")

    # 1. The first release: staging at once, prod once staging verified it and it soaked, by one commit.
    wait_for("staging live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    [promoted] = wait_for("the first promotion commit", lambda: promotions(upstream), 60)
    assert promoted["subject"] == f"promote podinfo to prod (staging@{promoted['Gitsync-Promoted-From'][-40:][:7]})"
    assert promoted["Gitsync-App"] == "podinfo" and promoted["Gitsync-Env"] == "prod"
    assert promoted["Gitsync-Evidence"].startswith("Succeeded") and f"soak {SOAK:g}s" in promoted["Gitsync-Evidence"]
    assert promoted["Gitsync-Digest"].startswith("sha256:")
    pinned = yaml.safe_load(git(upstream.bare, "show", "main:environments/prod/promoted.yaml"))
    assert pinned["podinfo"]["values"] == {"image": {"tag": "6.7.1"}} and pinned["podinfo"]["from"] == "staging"
    wait_for("prod live", lambda: configmap_value(core, prod_namespace) == "Hello from production", 60)
    wait_for("prod settled", lambda: status_of(core, prod_namespace, env="prod").get("result") == "Succeeded", 60)
    notes = git(upstream.bare, "notes", "--ref=gitsync", "show", first)
    assert '"env":"staging"' in notes and '"outcome":"Succeeded"' in notes, "staging's release is in the ledger"

    # 2. A new version: staging takes it at once, prod keeps the old one until the soak is over.
    upstream.work.joinpath("x").write_text("")  # keep the working clone in step with the promotion commit
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
    v2 = release(upstream, "6.7.2")
    wait_for("staging on 6.7.2", lambda: image_of(apps, namespace) == "6.7.2", 60, 0.05)
    assert image_of(apps, prod_namespace) == "6.7.1", "prod does not follow the branch head"
    wait_for("prod on 6.7.2", lambda: image_of(apps, prod_namespace) == "6.7.2", 90)
    assert [p["Gitsync-Promoted-From"] for p in promotions(upstream)].count(f"staging@{v2}") == 1

    # 2b. A change to the shared lib/ alone, no file of the app touched: it changes what the chart renders, so
    # staging takes it at once and prod by a promotion, as a chart change.
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
    assert configmap_value(core, prod_namespace, "shared") == "shared helpers v1"
    helpers = upstream.commit("lib: motto v2", {"lib/_shared.j2": MOTTO.replace("v1", "v2")})
    wait_for("staging on lib v2", lambda: configmap_value(core, namespace, "shared") == "shared helpers v2", 60)
    assert configmap_value(core, prod_namespace, "shared") == "shared helpers v1", "prod waits for the promotion"
    wait_for("prod on lib v2", lambda: configmap_value(core, prod_namespace, "shared") == "shared helpers v2", 90)
    assert [p["Gitsync-Promoted-From"] for p in promotions(upstream)].count(f"staging@{helpers}") == 1
    assert image_of(apps, prod_namespace) == "6.7.2"

    # 2c. A chart change only prod renders: staging's render and release stay as they are, yet prod gets it by a
    # promotion (the ledger notes the commit's chart, and the agent wakes prod after staging took the commit).
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
    prod_only = SHARED + '{% if release.env == "prod" %}\n  TIER: production\n{% endif %}\n'
    tier = upstream.commit("chart: prod says its tier", {"apps/podinfo/templates/shared.yaml": prod_only})
    wait_for("prod shows its tier", lambda: configmap_value(core, prod_namespace, "shared", "TIER") == "production", 90)
    assert [p["Gitsync-Promoted-From"] for p in promotions(upstream)].count(f"staging@{tier}") == 1

    # 3. A crash-looping release in staging is never promoted.
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
    bad = release(upstream, "6.9.9", {"gitsync.dev/fault": "crashloop"})
    wait_for("staging degraded", lambda: status_of(core, namespace).get("health") == "Degraded", 60)
    time.sleep(SOAK + 3)
    assert f"staging@{bad}" not in [p["Gitsync-Promoted-From"] for p in promotions(upstream)]
    assert image_of(apps, prod_namespace) == "6.7.2"

    # 4. Passes staging, fails in prod: rolled back in the cluster and in Git.
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
    template = upstream.work / "apps/podinfo/templates/deployment.yaml"
    text = template.read_text().replace("{% if values.podLabels %}", CRASH_IN_PROD + "{% if values.podLabels %}", 1)
    doomed = release(upstream, "6.7.3", files={"apps/podinfo/templates/deployment.yaml": text})
    wait_for("staging on 6.7.3", lambda: image_of(apps, namespace) == "6.7.3", 60)
    [rollback] = wait_for("a rollback commit", lambda: promotions(upstream, "Gitsync-Rollback-Of"), 120)
    assert rollback["subject"].startswith("roll back podinfo in prod to ")
    wait_for("prod back on 6.7.2", lambda: image_of(apps, prod_namespace) == "6.7.2", 60)
    pinned = yaml.safe_load(git(upstream.bare, "show", "main:environments/prod/promoted.yaml"))
    assert pinned["podinfo"]["values"] == {"image": {"tag": "6.7.2"}}, "Git again says what runs in prod"
    wait_for("a RollbackWritten event", lambda: "RollbackWritten" in dict(event_reasons(core, prod_namespace)), 60)

    # 5. A pin edited by hand to a commit staging never ran is Blocked; nothing of it is applied.
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")
    git(upstream.work, "checkout", "-q", "-b", "side")
    extra = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n"
    side = upstream.commit("an unreviewed chart", {"apps/podinfo/templates/extra.yaml": extra}, push=False)
    git(upstream.work, "push", "-q", "origin", "side")
    git(upstream.work, "checkout", "-q", "main")
    forged = yaml.safe_load((prod / "promoted.yaml").read_text())
    forged["podinfo"]["revision"] = side
    upstream.commit("pin prod by hand", {"environments/prod/promoted.yaml": yaml.safe_dump(forged)})
    status = wait_for(
        "prod blocked", lambda: (s := status_of(core, prod_namespace, env="prod")).get("result") == "Blocked" and s, 60
    )
    assert f"pin {side[:12]} is not verified" in status["lastError"]
    wait_for("a PromotionBlocked event", lambda: "PromotionBlocked" in dict(event_reasons(core, prod_namespace)), 60)
    assert configmap_value(core, prod_namespace, "extra") is None and image_of(apps, prod_namespace) == "6.7.2"
    assert not agent.logs("reconcile.crashed")

    # 6. The audit, from a fresh clone and Git alone.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream.bare), str(clone))
    audited = subprocess.run([str(GITSYNC), "audit", "--repo", str(clone), "-o", "json"], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert audited.returncode == 0, audited.stderr
    rows: list[dict[str, Any]] = json.loads(audited.stdout)
    seen = {(r["env"], r["outcome"]) for r in rows}
    assert {("staging", "Succeeded"), ("prod", "Succeeded"), ("prod", "RolledBack")} <= seen, seen
    prod_rows = [r for r in rows if r["env"] == "prod" and r["outcome"] == "Succeeded"]
    assert any(r.get("promotedFrom", "").startswith("staging@") for r in prod_rows), prod_rows
    assert doomed and bad


def test_pull_request_mode_proposes_on_a_branch_and_merging_it_promotes(
    agents: Agents, upstream: Upstream, namespace: str, prod_namespace: str, core: client.CoreV1Api,
    kube_api: client.ApiClient,
) -> None:  # fmt: skip
    apps = client.AppsV1Api(kube_api)
    prod = upstream.work / "environments/prod"
    env = yaml.safe_load((prod / "env.yaml").read_text())
    env["namespace"] = prod_namespace
    env["promotion"] = {"from": "staging", "mode": "pull-request", "soak": "1s", "values": ["image.tag"]}
    values = yaml.safe_load((prod / "values/podinfo.yaml").read_text())
    values["rollout"] = {"strategy": "rolling"}
    upstream.commit(
        "prod: promoted by pull request",
        {
            "environments/prod/env.yaml": yaml.safe_dump(env),
            "environments/prod/values/podinfo.yaml": yaml.safe_dump(values),
        },
    )
    agents.start(environments=["staging", "prod"], pollInterval="1s")
    branch = "gitsync/promote/prod/podinfo"

    def proposed() -> str:
        return git(upstream.bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}")

    head = wait_for("the promotion branch", proposed, 60)
    assert promotions(upstream) == [], "nothing is promoted on main before the pull request is merged"
    # prod's status is written at the end of its reconcile, which may come a moment after the branch is pushed.
    wait_for(
        "prod awaiting the promotion",
        lambda: status_of(core, prod_namespace, env="prod").get("result") == "AwaitingPromotion",
        60,
    )
    trailers = git(upstream.bare, "log", "-1", "--format=%(trailers:unfold)", head)
    assert "Gitsync-Promoted-From: staging@" in trailers and "Gitsync-Env: prod" in trailers

    git(upstream.work, "fetch", "-q", "origin", branch)
    git(upstream.work, "merge", "-q", "--ff-only", "FETCH_HEAD")
    git(upstream.work, "push", "-q", "origin", "main")
    wait_for("prod live after the merge", lambda: image_of(apps, prod_namespace) == "6.7.1", 60)
    wait_for("prod settled", lambda: status_of(core, prod_namespace, env="prod").get("result") == "Succeeded", 60)
    assert [p["sha"] for p in promotions(upstream)] == [head], "the merged commit is the promotion, written once"
