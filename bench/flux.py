#!/usr/bin/env python3
"""Flux benchmark: gitsync against Flux's source- and kustomize-controller on the same 1,000 objects, in one run.

    .venv/bin/python bench/flux.py             build Flux first if it is not in the cache (minutes, once), then run
    .venv/bin/python bench/flux.py --build-only    (what `make flux` runs)

Method: ../shared/research/flux-vs-gitsync.md; the rows of issue #19. Flux v1.9.6 (v1.10.x needs go >= 1.27) is
built from its Go modules into ~/.cache/gitsync/flux/<stamp> (stamp = version, go.mod edits, recipe, `go version`),
CGO off, GOTOOLCHAIN=local: the installed Go (go1.26.8), never one a go.mod's go line would fetch. Only a Go older
than v1.9.6's go line (1.26) fetches one, go1.26.8 by name (tools/gotoolchain.py), so the stamp still names the Go
that builds. fluxcd/pkg/artifact v0.18.3 -> v0.18.0 in source-controller (the module proxy refuses the v0.18.3 zip)
and each controller's published `api` module in place of its `./api` replace. Both controllers run as local
processes with the admin kubeconfig and their defaults, leader election off.

One private kubelab (state in --state-dir, stopped after) runs with the apiserver's audit log on; requests are
counted per user agent (gitsync/..., source-controller/..., kustomize-controller/...) as distinct audit IDs received
inside each step's window. The objects are bench/sync.py's generator (`write_repo` + `TEMPLATE`: 400 ConfigMaps,
300 Services, 300 Deployments with replicas 0). gitsync follows its chart; Flux a plain `bench/objects.yaml` holding
gitsync's rendered output (`kubectl_file`), each from its own bare repo served by `git http-backend` on 127.0.0.1.
Both follow at a 1m interval (Flux: GitRepository and Kustomization `interval: 1m`; gitsync: `pollInterval` and
`driftInterval` 1m), so the idle rows compare like with like.

Steps, one tool after the other: (a) first apply, trigger -> all 1,000 exist (Flux: create the Kustomization, the
artifact already stored; gitsync: start `gitsync run`); then both settle (every Deployment observed); (b) one
ConfigMap value changed, trigger -> new value live (Flux: annotate the GitRepository's requestedAt; gitsync: a
signed push webhook naming the commit); (c) a forced no-op reconcile (Flux: annotate the Kustomization's
requestedAt) against gitsync's drift-timer reconcile, whose cost is taken from (d); (d) an idle window; (e) memory
(VmRSS, peak VmHWM); (f) gitsync only: one more Deployment (replicas 1, a nodeSelector no node has, so it stays
Progressing) and the requests the agent makes while it waits.

`--ttl-jobs N` adds N setup Jobs with `ttlSecondsAfterFinished: 0` to both tools' objects, as ingress-nginx ships
its admission Jobs: they run, finish on kwok and are deleted by the TTL controller, and the idle window then shows
what a gone Job costs each drift-timer reconcile (gitsync runs such a Job once per body; Flux creates it again at
every interval).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from agentlab import AgentProcess, Agents, free_port, status_of, wait_for  # noqa: E402
from kubernetes import client  # noqa: E402
from latency import new_namespace, rss_mb  # noqa: E402
from rollout import Audit, lab, new_api, peak_rss_mb  # noqa: E402
from sync import CONFIGMAPS, DEPLOYMENTS, SERVICES, kubectl_file, write_repo  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from gotoolchain import GoToolchainError, Toolchain, select  # noqa: E402  (tools/gotoolchain.py)

FLUX_VERSION = "v1.9.6"  # v1.10.x needs go >= 1.27; the machine has go 1.26.8
MIN_GO = (1, 26)  # the go line of both controllers' go.mod at FLUX_VERSION
GO_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}  # plus the toolchain's GOTOOLCHAIN: local, or go1.26.8
BUILD_RECIPE = "1"


@dataclass(frozen=True, slots=True)
class Controller:
    """One Flux controller module. Its go.mod replaces its own `api` sub-module with `./api`, which the module zip
    does not hold (nested modules are separate), so the published api module of the same version is used instead.
    `replaces` are further `go mod edit -replace` edits."""

    name: str
    replaces: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"github.com/fluxcd/{self.name}"


CONTROLLERS = (
    # proxy.golang.org answers 403 for the fluxcd/pkg/artifact v0.18.3 zip; v0.18.0 builds and runs.
    Controller("source-controller", ("github.com/fluxcd/pkg/artifact=github.com/fluxcd/pkg/artifact@v0.18.0",)),
    Controller("kustomize-controller"),
)


def say(message: str) -> None:
    print(f"flux: {message}", file=sys.stderr, flush=True)


@functools.cache
def toolchain() -> Toolchain:
    try:
        return select(MIN_GO, f"Flux {FLUX_VERSION}", os.environ, say)
    except GoToolchainError as error:
        raise SystemExit(f"flux: {error}") from error


def flux_dir() -> Path:
    """~/.cache/gitsync/flux/<stamp>: the stamp covers the version, the edits, the recipe and `go version`."""
    recipe = json.dumps([FLUX_VERSION, BUILD_RECIPE, toolchain().version, [(c.name, c.replaces) for c in CONTROLLERS]])
    return Path.home() / ".cache" / "gitsync" / "flux" / hashlib.sha256(recipe.encode()).hexdigest()[:16]


def is_built(target: Path) -> bool:
    return all(os.access(target / "bin" / c.name, os.X_OK) for c in CONTROLLERS) and (target / "crds").is_dir()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_flux() -> Path:
    """Builds both controllers once (`go mod download`, copy, edit go.mod, `go build -trimpath`, static)."""
    target = flux_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.with_name(target.name + ".lock")):
        if is_built(target):
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "bin").mkdir(parents=True)
        (partial / "crds").mkdir()
        log_path = target.with_name(target.name + ".build.log")
        started = time.monotonic()
        with log_path.open("w") as log:

            def go(*argv: str, cwd: Path) -> str:
                log.write(f"$ cd {cwd} && go {' '.join(argv)}\n")
                log.flush()
                done = subprocess.run(
                    ["go", *argv],
                    cwd=cwd,
                    env={**os.environ, **GO_ENV, **toolchain().env},
                    capture_output=True,
                    text=True,
                )
                log.write(done.stderr)
                log.flush()
                if done.returncode != 0:
                    raise SystemExit(f"go {' '.join(argv)}: exit {done.returncode}; log: {log_path}")
                return done.stdout

            for controller in CONTROLLERS:
                say(f"building {controller.name} {FLUX_VERSION} (log: {log_path})")
                found = json.loads(go("mod", "download", "-json", f"{controller.module}@{FLUX_VERSION}", cwd=partial))
                source = partial / "src" / controller.name
                shutil.copytree(found["Dir"], source)
                for path in source.rglob("*"):  # the module cache is read-only
                    path.chmod(path.stat().st_mode | stat.S_IWUSR)
                go("mod", "edit", f"-dropreplace={controller.module}/api", cwd=source)
                for replace in controller.replaces:
                    go("mod", "edit", f"-replace={replace}", cwd=source)
                go(
                    "build",
                    "-trimpath",
                    "-ldflags=-s -w",
                    "-o",
                    str(partial / "bin" / controller.name),
                    ".",
                    cwd=source,
                )
                for crd in (source / "config" / "crd" / "bases").glob("*.yaml"):
                    shutil.copy(crd, partial / "crds" / crd.name)
            shutil.rmtree(partial / "src")
        (partial / "build.json").write_text(
            json.dumps(
                {"version": FLUX_VERSION, "go": toolchain().version, "seconds": round(time.monotonic() - started)}
            )
        )
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        say(f"built in {time.monotonic() - started:.0f} s -> {target}")
        return target


# ------------------------------------------------------------------------------------------------ Git over HTTP

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitHttp(BaseHTTPRequestHandler):
    """Smart HTTP by `git http-backend` as a CGI: Flux's GitRepository accepts only http(s) and ssh URLs."""

    server: GitServer

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        for header in ("Content-Encoding", "Git-Protocol"):
            if self.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, payload = done.stdout.partition(separator)
        headers = [line.partition(":")[::2] for line in head.decode().splitlines() if ":" in line]
        status = next((int(value.split()[0]) for name, value in headers if name.lower() == "status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "status":
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class GitServer(ThreadingHTTPServer):
    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), GitHttp)
        self.root = root
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}.git"


class Repo:
    """A bare repository under the server's root and a working clone that commits and pushes to it."""

    def __init__(self, server: GitServer, name: str, work: Path) -> None:
        self.bare, self.work, self.url = server.root / f"{name}.git", work, server.url(name)
        self._git(server.root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        work.mkdir(parents=True)
        self._git(work, "init", "-q", "-b", "main")

    def _git(self, cwd: Path, *args: str) -> str:
        env = {**os.environ, **IDENTITY, "HOME": str(cwd)}
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout

    def commit(self, message: str) -> str:
        self._git(self.work, "add", "-A")
        self._git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        self._git(self.work, "push", "-q", "--force", str(self.bare), "main")
        return self._git(self.work, "rev-parse", "HEAD").strip()


# ------------------------------------------------------------------------------------------------------ the tools

GITSYNC_AGENT = "gitsync/"
FLUX_AGENTS = ("source-controller/", "kustomize-controller/")
FLUX_NAMESPACE = "flux-system"
INTERVAL = "1m"
TIMEOUT = 900.0


class Flux:
    """source- and kustomize-controller as local processes, one GitRepository and one Kustomization."""

    def __init__(self, bin_dir: Path, crds: Path, kubeconfig: Path, api: client.ApiClient, logs: Path) -> None:
        self.custom = client.CustomObjectsApi(api)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": FLUX_NAMESPACE}})
        extensions = client.ApiextensionsV1Api(api)
        for crd in sorted(crds.glob("*.yaml")):
            extensions.create_custom_resource_definition(yaml.safe_load(crd.read_text()))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "RUNTIME_NAMESPACE": FLUX_NAMESPACE}
        storage = f"127.0.0.1:{free_port()}"
        (logs / "storage").mkdir()
        flags = {
            "source-controller": [
                f"--storage-path={logs / 'storage'}",
                f"--storage-addr={storage}",
                f"--storage-adv-addr={storage}",
            ],
            "kustomize-controller": [],
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name, extra in flags.items():
            argv = [
                str(bin_dir / name),
                *extra,
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-addr=127.0.0.1:{free_port()}",
                "--enable-leader-election=false",
                "--log-level=info",
            ]
            with (logs / f"{name}.log").open("wb") as out:
                self.processes[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()

    def _create(self, plural: str, group: str, version: str, body: dict[str, Any]) -> None:
        def created() -> bool:  # the CRD takes a moment to be served
            try:
                self.custom.create_namespaced_custom_object(group, version, FLUX_NAMESPACE, plural, body)
            except client.ApiException as e:
                if e.status == 404:
                    return False
                raise
            return True

        wait_for(f"{plural} created", created, 60, interval=0.5)

    def _get(self, plural: str, group: str, version: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(group, version, FLUX_NAMESPACE, plural, "bench"))

    def source(self, url: str) -> None:
        self._create(
            "gitrepositories",
            "source.toolkit.fluxcd.io",
            "v1",
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "bench"},
                "spec": {"url": url, "interval": INTERVAL, "ref": {"branch": "main"}},
            },
        )

    def artifact(self) -> str:
        return str(
            self._get("gitrepositories", "source.toolkit.fluxcd.io", "v1")
            .get("status", {})
            .get("artifact", {})
            .get("revision", "")
        )

    def kustomization(self) -> dict[str, Any]:
        return self._get("kustomizations", "kustomize.toolkit.fluxcd.io", "v1")

    def apply(self) -> None:
        self._create(
            "kustomizations",
            "kustomize.toolkit.fluxcd.io",
            "v1",
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": "bench"},
                "spec": {
                    "interval": INTERVAL,
                    "path": "./bench",
                    "prune": True,
                    "timeout": "5m",
                    "sourceRef": {"kind": "GitRepository", "name": "bench"},
                },
            },
        )

    def applied(self, sha: str) -> bool:
        status = self.kustomization().get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        return ready and status.get("lastAppliedRevision", "").endswith(sha)

    def request(self, plural: str, group: str) -> str:
        """Annotate ``reconcile.fluxcd.io/requestedAt`` (what `flux reconcile` does); returns the value."""
        stamp = dt.datetime.now(dt.UTC).isoformat()
        body = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}}
        self.custom.patch_namespaced_custom_object(group, "v1", FLUX_NAMESPACE, plural, "bench", body)
        return stamp

    def handled(self, stamp: str) -> bool:
        return bool(self.kustomization().get("status", {}).get("lastHandledReconcileAt") == stamp)


# ---------------------------------------------------------------------------------------------------- observation


def counted(lister: Callable[..., Any], namespace: str) -> int:
    """How many objects a namespace holds, from one LIST with limit=1 (remainingItemCount), not the whole list."""
    listed = lister(namespace, limit=1)
    return len(listed.items) + int(listed.metadata.remaining_item_count or 0)


def all_exist(api: client.ApiClient, namespace: str) -> bool:
    """The 1,000 objects exist: both tools apply ConfigMaps, Services, Deployments in that order, so the cheap
    counts are checked first and the ConfigMaps (the namespace also holds gitsync's own) by name last."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    if counted(apps.list_namespaced_deployment, namespace) < DEPLOYMENTS:
        return False
    if counted(core.list_namespaced_service, namespace) < SERVICES:
        return False
    names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
    return sum(name.startswith("cm-") for name in names) >= CONFIGMAPS


def value(api: client.ApiClient, namespace: str) -> str:
    try:
        return str((client.CoreV1Api(api).read_namespaced_config_map("cm-0", namespace).data or {}).get("value"))
    except client.ApiException:
        return ""


def observed(api: client.ApiClient, namespaces: list[str]) -> bool:
    """Every Deployment observed by kube-controller-manager (at its default QPS it lags minutes behind 600)."""
    apps = client.AppsV1Api(api)
    return all(
        (d.status.observed_generation or 0) >= d.metadata.generation
        for namespace in namespaces
        for d in apps.list_namespaced_deployment(namespace).items
    )


def gitsync_done(api: client.ApiClient, namespace: str, sha: str, result: str = "Succeeded") -> bool:
    status = status_of(client.CoreV1Api(api), namespace, app="bench", env="bench")
    return status.get("result") == result and status.get("lastAppliedRevision") == sha


def reconciles(agent: AgentProcess, start: float, end: float) -> int:
    """Reconciles the agent logged in [start, end]: releases (`reconcile.done`) and drift checks."""
    return sum(
        start <= dt.datetime.fromisoformat(record["timestamp"]).timestamp() <= end
        for record in agent.logs()
        if record.get("event") in ("reconcile.done", "reconcile.drift_checked")
    )


@dataclass
class Figures:
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def put(self, row: str, tool: str, number: float) -> None:
        self.rows.setdefault(row, {})[tool] = number


def requests(audit: Audit, prefixes: tuple[str, ...], start: float, end: float, label: str, figures: Figures) -> int:
    """Requests of the user agents in [start, end]; the top verbs go to the details."""
    by_what: Counter[str] = Counter()
    for prefix in prefixes:
        by_what += audit.count(prefix, start, end)
    total = sum(by_what.values())
    top = ", ".join(f"{what} {n}" for what, n in by_what.most_common(5))
    figures.details.append(f"{label}: {total} requests ({top})")
    return total


# ------------------------------------------------------------------------------------------------------- the run


def run(
    work: Path, bin_dir: Path, kubeconfig: Path, audit: Audit, idle: float, waiting: float, ttl_jobs: int = 0
) -> Figures:
    figures = Figures()
    api = new_api(kubeconfig)
    core = client.CoreV1Api(api)
    suffix = secrets.token_hex(3)
    gs_ns, flux_ns = new_namespace(core, "gs-bench"), new_namespace(core, "flux-bench")
    server = GitServer(work / "git")
    (work / "git").mkdir(exist_ok=True)
    ours, theirs = Repo(server, f"gitsync-{suffix}", work / "gitsync"), Repo(server, f"flux-{suffix}", work / "flux")

    def commit_ours(changed: str) -> str:
        write_repo(ours.work, gs_ns, changed)
        write_jobs(ours.work, ttl_jobs)
        return ours.commit(f"bench: {changed}")

    def commit_theirs(changed: str) -> str:
        """The same objects as gitsync's chart renders with ``changed`` (rendered from a scratch copy, so gitsync's
        repository is not touched before its own turn: its 1m poll would pick a change up early)."""
        scratch = work / "render"
        write_repo(scratch, gs_ns, changed)
        write_jobs(scratch, ttl_jobs)
        (theirs.work / "bench").mkdir(exist_ok=True)
        kubectl_file(scratch, flux_ns, theirs.work / "bench" / "objects.yaml")
        return theirs.commit(f"bench: {changed}")

    ours_sha, theirs_sha = commit_ours("v1"), commit_theirs("v1")
    (work / "flux-logs").mkdir()
    flux = Flux(bin_dir / "bin", bin_dir / "crds", kubeconfig, api, work / "flux-logs")
    agents = Agents(work / "agents", kubeconfig, ours)  # type: ignore[arg-type]  # only .url is read
    agent: AgentProcess | None = None
    try:
        flux.source(theirs.url)
        wait_for("Flux artifact", lambda: flux.artifact().endswith(theirs_sha), 120, interval=0.5)

        print("bench: (a) first apply", flush=True)
        start = time.time()
        flux.apply()
        wait_for("Flux: 1,000 objects", lambda: all_exist(api, flux_ns), TIMEOUT, interval=0.25)
        figures.put("first apply, s", "flux", time.time() - start)
        wait_for("Flux: Ready", lambda: flux.applied(theirs_sha), TIMEOUT, interval=0.25)
        figures.put(
            "first apply, requests",
            "flux",
            requests(audit, FLUX_AGENTS, start, time.time(), "Flux first apply", figures),
        )

        start = time.time()
        agent = agents.start(
            "gitsync",
            repo={"url": ours.url, "branch": "main"},
            environments=["bench"],
            pollInterval=INTERVAL,
            driftInterval=INTERVAL,
        )
        wait_for("gitsync: 1,000 objects", lambda: all_exist(api, gs_ns), TIMEOUT, interval=0.25)
        exist = time.time()
        figures.put("first apply, s", "gitsync", exist - start)
        figures.put(
            "first apply, requests",
            "gitsync",
            requests(audit, (GITSYNC_AGENT,), start, exist + 0.5, "gitsync first apply (start -> all exist)", figures),
        )

        print("bench: waiting until kube-controller-manager has observed every Deployment", flush=True)
        wait_for("Deployments observed", lambda: observed(api, [gs_ns, flux_ns]), TIMEOUT, interval=2)
        wait_for("gitsync: Succeeded", lambda: gitsync_done(api, gs_ns, ours_sha), TIMEOUT, interval=0.5)
        settled = time.time()
        label = f"gitsync while its Deployments settled ({settled - exist:.0f} s: all exist -> Succeeded)"
        requests(audit, (GITSYNC_AGENT,), exist + 0.5, settled, label, figures)

        print("bench: (b) one change", flush=True)
        theirs_sha = commit_theirs("v2")
        start = time.time()
        flux.request("gitrepositories", "source.toolkit.fluxcd.io")
        wait_for("Flux: new value", lambda: value(api, flux_ns) == "v2", TIMEOUT, interval=0.05)
        figures.put("one change, s", "flux", time.time() - start)
        wait_for("Flux: applied", lambda: flux.applied(theirs_sha), TIMEOUT, interval=0.25)
        figures.put(
            "one change, requests",
            "flux",
            requests(audit, FLUX_AGENTS, start, time.time() + 0.5, "Flux one change", figures),
        )
        ours_sha = commit_ours("v2")
        start = time.time()
        agent.push_webhook(ours_sha)
        wait_for("gitsync: new value", lambda: value(api, gs_ns) == "v2", TIMEOUT, interval=0.05)
        figures.put("one change, s", "gitsync", time.time() - start)
        wait_for("gitsync: applied", lambda: gitsync_done(api, gs_ns, ours_sha), TIMEOUT, interval=0.25)
        figures.put(
            "one change, requests",
            "gitsync",
            requests(audit, (GITSYNC_AGENT,), start, time.time() + 0.5, "gitsync one change", figures),
        )

        print("bench: (c) no-op reconcile", flush=True)
        start = time.time()
        stamp = flux.request("kustomizations", "kustomize.toolkit.fluxcd.io")
        wait_for("Flux: no-op handled", lambda: flux.handled(stamp), TIMEOUT, interval=0.1)
        figures.details.append(f"Flux forced no-op reconcile: {time.time() - start:.2f} s")
        figures.put(
            "no-op reconcile, requests",
            "flux",
            requests(audit, FLUX_AGENTS, start, time.time() + 0.5, "Flux forced no-op", figures),
        )
        start = time.time()
        agent.push_webhook(ours_sha)
        time.sleep(3)
        requests(audit, (GITSYNC_AGENT,), start, time.time(), "gitsync webhook naming the current head (3 s)", figures)

        print(f"bench: (d) idle for {idle:.0f} s", flush=True)
        start = time.time()
        time.sleep(idle)
        end = time.time()
        flux_idle = requests(audit, FLUX_AGENTS, start, end, f"Flux idle {idle:.0f} s", figures)
        gitsync_idle = requests(audit, (GITSYNC_AGENT,), start, end, f"gitsync idle {idle:.0f} s", figures)
        drifts = reconciles(agent, start, end)
        figures.details.append(f"gitsync reconciles in the idle window: {drifts}")
        figures.put("idle requests per minute", "flux", flux_idle * 60 / idle)
        figures.put("idle requests per minute", "gitsync", gitsync_idle * 60 / idle)
        figures.put("no-op reconcile, requests", "gitsync", gitsync_idle / max(drifts, 1))
        figures.put("drift-timer reconcile, requests", "gitsync", gitsync_idle / max(drifts, 1))

        print("bench: (e) memory", flush=True)
        assert agent.process is not None
        pids = {**flux.pids(), "gitsync": agent.process.pid}
        rss = {name: rss_mb(pid) for name, pid in pids.items()}
        peaks = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        figures.details.append("RSS MiB (peak): " + ", ".join(f"{n} {rss[n]:.0f} ({peaks[n]:.0f})" for n in pids))
        figures.put("memory RSS, MiB", "flux", sum(rss[name] for name in flux.pids()))
        figures.put("memory RSS, MiB", "gitsync", rss["gitsync"])

        print(f"bench: (f) gitsync while a Deployment is Progressing ({waiting:.0f} s)", flush=True)
        (ours.work / "apps" / "bench" / "templates" / "waiting.yaml").write_text(WAITING)
        ours_sha = ours.commit("bench: a Deployment that cannot become available")
        agent.push_webhook(ours_sha)
        wait_for(
            "gitsync: Progressing", lambda: gitsync_done(api, gs_ns, ours_sha, "Progressing"), TIMEOUT, interval=0.25
        )
        start = time.time()
        time.sleep(waiting)
        end = time.time()
        waited = requests(audit, (GITSYNC_AGENT,), start, end, f"gitsync waiting {waiting:.0f} s", figures)
        checks = reconciles(agent, start, end)
        still = gitsync_done(api, gs_ns, ours_sha, "Progressing")
        figures.details.append(f"gitsync reconciles while waiting: {checks}; still Progressing at the end: {still}")
        figures.put("waiting, requests per minute", "gitsync", waited * 60 / waiting)
        figures.put("waiting reconcile, requests", "gitsync", waited / max(checks, 1))
    finally:
        if agent is not None:
            agents.stop_all()
        flux.stop()
        server.shutdown()
    return figures


def write_jobs(root: Path, count: int) -> None:
    """``count`` setup Jobs that remove themselves once finished (``--ttl-jobs``), in the bench chart."""
    if count:
        path = root / "apps" / "bench" / "templates" / "setup-jobs.yaml"
        path.write_text("".join(SETUP_JOB.format(n=n) for n in range(count)))


SETUP_JOB = """\
---
apiVersion: batch/v1
kind: Job
metadata:
  name: setup-{n}
spec:
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: setup
          image: registry.example/setup:1
"""

WAITING = """\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: waiting
spec:
  replicas: 1
  selector:
    matchLabels: {app: waiting}
  template:
    metadata:
      labels: {app: waiting}
    spec:
      nodeSelector: {bench.gitsync.dev/no-such-node: "true"}
      containers:
        - name: app
          image: registry.example/app:waiting
"""


def report(figures: Figures) -> None:
    print()
    for line in figures.details:
        print(f"  {line}")
    print()
    print(f"{'measure (1,000 objects)':<34} {'Flux':>10} {'gitsync':>10}  ratio (Flux / gitsync)")
    behind = []
    for row, tools in figures.rows.items():
        if "flux" not in tools:
            continue
        ratio = tools["flux"] / tools["gitsync"] if tools["gitsync"] else float("inf")
        if ratio <= 1:
            behind.append(row)
        print(f"{row:<34} {tools['flux']:>10.1f} {tools['gitsync']:>10.1f}  {ratio:6.1f}x")
    print(f"goal: ahead on every row: {'met' if not behind else 'missed on ' + ', '.join(behind)}")
    for row in ("waiting reconcile, requests", "drift-timer reconcile, requests"):
        number = figures.rows[row]["gitsync"]
        print(f"gitsync {row}: {number:.1f} (goal <= 10: {'met' if number <= 10 else 'missed'})")
    print(f"gitsync waiting, requests per minute: {figures.rows['waiting, requests per minute']['gitsync']:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-only", action="store_true", help="build Flux into the cache and stop")
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/kubelab-flux"), help="the private kubelab's state")
    parser.add_argument("--idle", type=float, default=150.0, help="seconds of the idle window (d)")
    parser.add_argument("--waiting", type=float, default=60.0, help="seconds of the waiting window (f)")
    parser.add_argument("--ttl-jobs", type=int, default=0, help="setup Jobs with ttlSecondsAfterFinished: 0 to add")
    args = parser.parse_args()
    target = build_flux()
    if args.build_only:
        print(target)
        return 0
    shutil.rmtree(args.state_dir, ignore_errors=True)  # a fresh cluster: kubelab keeps etcd's data in the state
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-flux-") as tmp, lab(args.state_dir) as (kubeconfig, audit):
        try:
            figures = run(Path(tmp), target, kubeconfig, audit, args.idle, args.waiting, args.ttl_jobs)
        except BaseException:
            for log in sorted(Path(tmp).rglob("*.log")):
                print(
                    f"--- {log.name} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]),
                    file=sys.stderr,
                )
            raise
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
