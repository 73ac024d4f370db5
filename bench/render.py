#!/usr/bin/env python3
"""Render benchmark: gitsync's renderer against `helm template` on the same 200-object chart.

    .venv/bin/python bench/render.py                 in-process objects/second, then whole-process timings
    .venv/bin/python bench/render.py --build-helm    first build helm from tools/helm/go.mod (minutes, once)

The chart (generated in a temporary directory) has 50 services x (ServiceAccount, ConfigMap, Service,
Deployment) = 200 objects, written once as a gitsync chart (Jinja) and once as an equivalent Helm chart (Go
templates, same loops, helpers and output). Whole-process timings include interpreter / binary start-up, since
that is what a CI job or a repo-server pays per render. Helm is looked up in
~/.cache/gitsync/helm/<stamp>/helm (stamp = go.sum + the version of the Go that builds: the local one when it is
>= 1.26, else the one tools/gotoolchain.py fetches); without it the Helm half is skipped.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from gotoolchain import GoToolchainError, Toolchain, select  # noqa: E402  (tools/gotoolchain.py)

HELM_MODULE = ROOT / "tools" / "helm"
HELM_MIN_GO = (1, 26)  # the go line of tools/helm/go.mod
SERVICES = 50  # x 4 kinds = 200 objects

GITSYNC_HELPERS = """\
{% macro labels(svc) %}
app.kubernetes.io/name: {{ svc.name }}
app.kubernetes.io/part-of: {{ chart.name }}
tier: {{ svc.tier | quote }}
{% endmacro %}
"""
GITSYNC_TEMPLATES = {
    "serviceaccounts.yaml": """\
{% for svc in values.services %}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ svc.name }}
  labels: {{ include("helpers.labels", svc) | nindent(4) }}
{% endfor %}
""",
    "configmaps.yaml": """\
{% for svc in values.services %}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ svc.name }}
  labels: {{ include("helpers.labels", svc) | nindent(4) }}
data: {{ svc.config | toYaml | nindent(2) }}
{% endfor %}
""",
    "services.yaml": """\
{% for svc in values.services %}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ svc.name }}
  labels: {{ include("helpers.labels", svc) | nindent(4) }}
spec:
  selector:
    app.kubernetes.io/name: {{ svc.name }}
  ports:
    - name: http
      port: 80
      targetPort: {{ svc.port }}
{% endfor %}
""",
    "deployments.yaml": """\
{% for svc in values.services %}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ svc.name }}
  labels: {{ include("helpers.labels", svc) | nindent(4) }}
spec:
  replicas: {{ svc.replicas | default(1) }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ svc.name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ svc.name }}
      annotations:
        checksum/config: {{ svc.config | toJson | sha256sum | quote }}
    spec:
      serviceAccountName: {{ svc.name }}
      containers:
        - name: app
          image: "{{ values.image.repository }}:{{ svc.tag | default(values.image.tag) }}"
          ports:
            - containerPort: {{ svc.port }}
          envFrom:
            - configMapRef:
                name: {{ svc.name }}
          resources: {{ values.resources | toYaml | nindent(12) }}
{% endfor %}
""",
}

HELM_HELPERS = """\
{{- define "bench.labels" -}}
app.kubernetes.io/name: {{ .svc.name }}
app.kubernetes.io/part-of: {{ .root.Chart.Name }}
tier: {{ .svc.tier | quote }}
{{- end -}}
"""
HELM_TEMPLATES = {
    "serviceaccounts.yaml": """\
{{- range .Values.services }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  labels: {{ include "bench.labels" (dict "svc" . "root" $) | nindent 4 }}
{{- end }}
""",
    "configmaps.yaml": """\
{{- range .Values.services }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}
  labels: {{ include "bench.labels" (dict "svc" . "root" $) | nindent 4 }}
data: {{ .config | toYaml | nindent 2 }}
{{- end }}
""",
    "services.yaml": """\
{{- range .Values.services }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels: {{ include "bench.labels" (dict "svc" . "root" $) | nindent 4 }}
spec:
  selector:
    app.kubernetes.io/name: {{ .name }}
  ports:
    - name: http
      port: 80
      targetPort: {{ .port }}
{{- end }}
""",
    "deployments.yaml": """\
{{- range .Values.services }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels: {{ include "bench.labels" (dict "svc" . "root" $) | nindent 4 }}
spec:
  replicas: {{ .replicas | default 1 }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ .name }}
      annotations:
        checksum/config: {{ .config | toJson | sha256sum | quote }}
    spec:
      serviceAccountName: {{ .name }}
      containers:
        - name: app
          image: "{{ $.Values.image.repository }}:{{ .tag | default $.Values.image.tag }}"
          ports:
            - containerPort: {{ .port }}
          envFrom:
            - configMapRef:
                name: {{ .name }}
          resources: {{ $.Values.resources | toYaml | nindent 12 }}
{{- end }}
""",
}


def values_yaml(services: int = SERVICES) -> str:
    lines = [
        "image:",
        "  repository: ghcr.io/example/app",
        '  tag: "1.0.0"',
        "resources:",
        "  requests: {cpu: 50m, memory: 64Mi}",
        "  limits: {memory: 128Mi}",
        "services:",
    ]
    for i in range(services):
        lines += [
            f"  - name: svc-{i:03d}",
            f"    port: {8000 + i}",
            f"    replicas: {1 + i % 3}",
            f'    tier: "{("web", "api", "worker")[i % 3]}"',
            "    config:",
            f'      LOG_LEVEL: "{("info", "debug")[i % 2]}"',
            f'      FEATURE_X: "{str(i % 2 == 0).lower()}"',
            f'      UPSTREAM: "http://svc-{(i + 1) % services:03d}"',
        ]
    return "\n".join(lines) + "\n"


def write_gitsync_chart(chart: Path, name: str = "bench", services: int = SERVICES) -> None:
    """A gitsync chart of ``services`` x 4 objects (Jinja)."""
    (chart / "templates").mkdir(parents=True)
    (chart / "chart.yaml").write_text(f"name: {name}\nversion: 0.1.0\ndescription: benchmark chart\n")
    (chart / "values.yaml").write_text(values_yaml(services))
    (chart / "templates" / "_helpers.j2").write_text(GITSYNC_HELPERS)
    for file, text in GITSYNC_TEMPLATES.items():
        (chart / "templates" / file).write_text(text)


def write_helm_chart(helm: Path, name: str = "bench", services: int = SERVICES) -> None:
    """The equivalent Helm chart (Go templates, same loops, helpers and output)."""
    (helm / "templates").mkdir(parents=True)
    (helm / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: 0.1.0\ndescription: benchmark chart\n")
    (helm / "values.yaml").write_text(values_yaml(services))
    (helm / "templates" / "_helpers.tpl").write_text(HELM_HELPERS)
    for file, text in HELM_TEMPLATES.items():
        (helm / "templates" / file).write_text(text)


def write_repos(base: Path) -> tuple[Path, Path]:
    """The gitsync repository and the Helm chart, same values and same objects."""
    repo = base / "repo"
    write_gitsync_chart(repo / "apps" / "bench")
    env = repo / "environments" / "bench"
    env.mkdir(parents=True)
    (env / "env.yaml").write_text("namespace: bench\napps: [bench]\n")
    helm = base / "helm-chart"
    write_helm_chart(helm)
    return repo, helm


@functools.cache
def helm_toolchain() -> Toolchain:
    return select(HELM_MIN_GO, "helm (tools/helm)", os.environ, print)


def helm_stamp_dir() -> Path:
    go_version = helm_toolchain().goversion
    digest = hashlib.sha256((HELM_MODULE / "go.sum").read_bytes() + go_version.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "gitsync" / "helm" / digest


def find_helm() -> Path | None:
    try:
        helm = helm_stamp_dir() / "helm"
    except (OSError, GoToolchainError):
        return None
    return helm if os.access(helm, os.X_OK) else None


def build_helm() -> Path:
    """`go build` helm from tools/helm/go.mod into the stamped cache (static, no cgo; the Go of helm_toolchain)."""
    target = helm_stamp_dir()
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", **helm_toolchain().env}
    start = time.monotonic()
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(target / "helm.tmp"), "helm.sh/helm/v3/cmd/helm"],
        cwd=HELM_MODULE,
        env=env,
        check=True,
    )
    (target / "helm.tmp").rename(target / "helm")
    print(f"built helm in {time.monotonic() - start:.0f} s -> {target / 'helm'}")
    return target / "helm"


def best_of(runs: int, command: list[str], cwd: Path) -> tuple[float, bytes]:
    """Best wall time of ``runs`` whole-process runs (start-up included), and the output of the last."""
    times = []
    out = b""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - start)
        out = done.stdout
    return min(times), out


def in_process(repo: Path, seconds: float) -> float:
    sys.path.insert(0, str(ROOT))
    from renderers import render_app

    first = time.perf_counter()
    rendered = render_app(repo, "bench", "bench")
    cold = time.perf_counter() - first
    objects = len(rendered.manifests)
    assert objects == SERVICES * 4, objects
    renders = 0
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and renders < 10_000:
        start = time.perf_counter()
        again = render_app(repo, "bench", "bench")
        samples.append(time.perf_counter() - start)
        renders += 1
        assert again.digest == rendered.digest
    median = statistics.median(samples)
    print(f"in-process: {objects} objects, first render {cold * 1000:.0f} ms (compiles templates)")
    print(f"in-process: {renders} renders, median {median * 1000:.1f} ms -> {objects / median:,.0f} objects/s")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-helm", action="store_true", help="build helm first if it is not in the cache")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to render in-process")
    parser.add_argument("--runs", type=int, default=7, help="whole-process runs per tool (best is reported)")
    args = parser.parse_args()

    helm = find_helm()
    # An installed package has its bytecode; a source tree run with PYTHONDONTWRITEBYTECODE would recompile per run.
    for package in ("gitsync", "renderers"):
        compileall.compile_dir(ROOT / package, quiet=1)
    if helm is None and args.build_helm:
        try:
            helm = build_helm()
        except GoToolchainError as error:
            sys.exit(f"bench: {error}")

    with tempfile.TemporaryDirectory(prefix="gitsync-bench-") as tmp:
        repo, helm_chart = write_repos(Path(tmp))
        median = in_process(repo, args.seconds)

        python = str(ROOT / ".venv" / "bin" / "python")
        bare, _ = best_of(args.runs, [python, "-c", "pass"], Path(tmp))
        jinja, _ = best_of(args.runs, [python, "-c", "import jinja2"], Path(tmp))
        floor, _ = best_of(args.runs, [python, "-c", "import gitsync.cli, gitsync.cli.render"], Path(tmp))
        print(f"start-up: python alone {bare * 1000:.0f} ms, python + import jinja2 {jinja * 1000:.0f} ms")
        print(f"start-up floor (python + imports of gitsync render, no render): {floor * 1000:.0f} ms")
        gitsync = [str(ROOT / ".venv" / "bin" / "gitsync"), "render", "--repo", str(repo), "--env", "bench"]
        ours, out = best_of(args.runs, gitsync, Path(tmp))
        docs = out.count(b"\n---\n") + out.startswith(b"---\n")
        print(f"gitsync render (whole process): best of {args.runs} {ours * 1000:.0f} ms, {docs} objects")
        if helm is None:
            print("helm: not built; run `.venv/bin/python bench/render.py --build-helm` (a few minutes)")
            return 0
        theirs, out = best_of(args.runs, [str(helm), "template", "bench", str(helm_chart)], Path(tmp))
        docs = out.count(b"\n---\n") + out.startswith(b"---\n")
        print(f"helm template  (whole process): best of {args.runs} {theirs * 1000:.0f} ms, {docs} objects")
        print(f"ratio, whole process each: gitsync is {theirs / ours:.2f}x the speed of helm (goal >= 2x)")
        print(f"  (2x needs <= {theirs / 2 * 1000:.0f} ms; importing Jinja alone takes {jinja * 1000:.0f} ms)")
        print(f"ratio, agent's in-process render vs helm template: {theirs / median:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
