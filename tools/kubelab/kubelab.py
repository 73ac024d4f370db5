#!/usr/bin/env python3
"""kubelab: a real Kubernetes control plane on 127.0.0.1 for gitsync's tests, with no container engine.

    kubelab.py build                  compile the upstream binaries (skipped when the cached build is complete)
    kubelab.py up --state-dir DIR     start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
                                      create fake Nodes; the last line of stdout is the admin kubeconfig path
        [--apiserver-arg=--FLAG=VALUE]  extra kube-apiserver flags, repeatable (bench/rollout.py turns on the
                                      audit log with them)
    kubelab.py down --state-dir DIR   stop every process `up` started, by recorded PID
    kubelab.py status --state-dir DIR which components run, their memory, and whether /readyz answers

The binaries are built from published Go modules (tools/kubelab/go.mod pins k8s.io/kubernetes, tools/kwok/go.mod
pins kwok; no Go code of our own) into a cache outside the work tree, keyed by a stamp of both go.mod/go.sum pairs,
`go version` and BUILD_RECIPE. A fresh clone on the same machine therefore reuses the binaries. The Go that compiles
is the local one when it is >= MIN_GO, else one it fetches from the Go module proxy (tools/gotoolchain.py); the stamp
names the one that compiles.

Every component is its own OS process (two control-plane components in one Go process panic), listening on
free loopback ports, logging to DIR/logs/<component>.log, with its PID in DIR/pids/<component>.pid. Progress goes to
stderr; stdout carries only the kubeconfig path, so callers can take its last line.

Dependencies: the standard library, cryptography, pyyaml and tools/gotoolchain.py, so it runs with the project's
venv python.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBELAB_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(KUBELAB_DIR.parent))
from gotoolchain import GoToolchainError, Toolchain, select  # noqa: E402  (tools/gotoolchain.py)

KWOK_DIR = KUBELAB_DIR.parent / "kwok"
STAGES_FILE = KUBELAB_DIR / "kwok-stages.yaml"
BIN_LINK = KUBELAB_DIR / "bin"

# Bump whenever what `build` produces changes (packages, flags, binary names): the cache stamp includes it.
BUILD_RECIPE = "1"
MIN_GO = (1, 24)  # go.mod `tool` directives need Go 1.24
GO_ENV = {"CGO_ENABLED": "0"}  # plus the Toolchain's GOTOOLCHAIN
GO_FLAGS = ("-trimpath", "-pgo=off")

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Controllers that need a cloud, real kubelets or a pod CIDR allocator; the rest is upstream's default set.
CONTROLLERS = (
    "*,-node-ipam-controller,-node-route-controller,-service-lb-controller,"
    "-cloud-node-lifecycle-controller,-persistentvolume-attach-detach-controller"
)
NODE_NAMES = ("kubelab-node-1", "kubelab-node-2")


class KubelabError(Exception):
    """A failure the user must act on; the message names the component and the log to read."""


def say(message: str) -> None:
    print(f"kubelab: {message}", file=sys.stderr, flush=True)


def took(started: float) -> str:
    seconds = time.monotonic() - started
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:02.0f}s"


# --------------------------------------------------------------------------------------------------------- build


@dataclass(frozen=True, slots=True)
class GoBuild:
    """One `go build` run inside one Go module. `output` names the binary when a single package's default name
    would be wrong (etcd's main package `go.etcd.io/etcd/server/v3` builds as `server`)."""

    module_dir: Path
    packages: tuple[str, ...]
    output: str | None = None
    kube_version_ldflags: bool = True


BUILDS = (
    GoBuild(KUBELAB_DIR, ("go.etcd.io/etcd/server/v3",), output="etcd"),
    GoBuild(
        KUBELAB_DIR,
        (
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
        ),
    ),
    GoBuild(KWOK_DIR, ("sigs.k8s.io/kwok/cmd/kwok",), kube_version_ldflags=False),
)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def cache_root() -> Path:
    return (
        Path(os.environ.get("KUBELAB_CACHE") or Path.home() / ".cache" / "gitsync" / "kubelab").expanduser().resolve()
    )


def toolchain() -> Toolchain:
    """The Go that compiles, after checking that one exists that is (or fetches one) new enough for the go.mod files."""
    try:
        return select(MIN_GO, "kubelab", os.environ, say)
    except GoToolchainError as error:
        raise KubelabError(str(error)) from error


def build_stamp(go_line: str) -> str:
    digest = hashlib.sha256(f"recipe {BUILD_RECIPE}\n{go_line}\n".encode())
    for module in (KUBELAB_DIR, KWOK_DIR):
        for name in ("go.mod", "go.sum"):
            digest.update(f"{module.name}/{name}\n".encode())
            digest.update((module / name).read_bytes())
    return digest.hexdigest()[:16]


def kubernetes_version() -> str:
    found = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", (KUBELAB_DIR / "go.mod").read_text(), re.M)
    if found is None:
        raise KubelabError(f"{KUBELAB_DIR / 'go.mod'}: no k8s.io/kubernetes requirement")
    return found[1]


def version_ldflags(version: str) -> str:
    """What Kubernetes' hack/lib/version.sh stamps, so /version reports the real release instead of v0.0.0."""
    found = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if found is None:
        raise KubelabError(f"k8s.io/kubernetes {version}: not a release version")
    fields = {
        "gitVersion": version,
        "gitMajor": found[1],
        "gitMinor": found[2],
        "gitTreeState": "clean",
        "buildDate": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return " ".join(
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in fields.items()
    )


def is_complete(stamp_dir: Path) -> bool:
    return (stamp_dir / "build.json").is_file() and all(
        os.access(stamp_dir / "bin" / name, os.X_OK) for name in BINARIES
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialises concurrent builds of one stamp (two pytest sessions starting at once)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def link_bin(bin_dir: Path) -> None:
    """tools/kubelab/bin -> the current stamp's binaries, for people running them by hand (git-ignored)."""
    if BIN_LINK.exists() and not BIN_LINK.is_symlink():
        return
    with contextlib.suppress(FileNotFoundError):
        BIN_LINK.unlink()
    BIN_LINK.symlink_to(bin_dir, target_is_directory=True)


def build() -> Path:
    """Returns the directory holding BINARIES, compiling them first unless the stamp's build is complete."""
    go = toolchain()
    stamp = build_stamp(go.version)
    root = cache_root()
    final = root / stamp
    if not is_complete(final):
        root.mkdir(parents=True, exist_ok=True)
        with locked(root / f"{stamp}.lock"):
            if not is_complete(final):
                compile_into(final, go)
    else:
        say(f"binaries up to date in {final / 'bin'}")
    link_bin(final / "bin")
    return final / "bin"


def compile_into(final: Path, go: Toolchain) -> None:
    k8s = kubernetes_version()
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    bin_dir = partial / "bin"
    bin_dir.mkdir(parents=True)
    log_path = final.with_name(final.name + ".build.log")
    say(f"building Kubernetes {k8s} + kwok with {go.version}; the first build takes minutes (log: {log_path})")
    started = time.monotonic()
    timings: dict[str, float] = {}
    with log_path.open("w") as log:
        for step in BUILDS:
            ldflags = "-s -w" + (" " + version_ldflags(k8s) if step.kube_version_ldflags else "")
            output = str(bin_dir / step.output) if step.output else f"{bin_dir}/"
            argv = ["go", "build", *GO_FLAGS, "-ldflags", ldflags, "-o", output, *step.packages]
            names = step.output or ", ".join(package.rsplit("/", 1)[-1] for package in step.packages)
            say(f"go build {names} (in {step.module_dir.name})")
            log.write(f"$ cd {step.module_dir} && {' '.join(argv)}\n")
            log.flush()
            step_started = time.monotonic()
            done = subprocess.run(
                argv, cwd=step.module_dir, env={**os.environ, **GO_ENV, **go.env}, stdout=log, stderr=subprocess.STDOUT
            )
            if done.returncode != 0:
                tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
                raise KubelabError(f"go build {names}: exit {done.returncode}; full log: {log_path}\n{tail}")
            timings[names] = round(time.monotonic() - step_started, 1)
            say(f"  done in {took(step_started)}")
    missing = [name for name in BINARIES if not (bin_dir / name).is_file()]
    if missing:
        raise KubelabError(f"build finished without {', '.join(missing)}; see {log_path}")
    record = {
        "kubernetes": k8s,
        "go": go.version,
        "recipe": BUILD_RECIPE,
        "seconds": timings,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    (partial / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    partial.rename(final)
    say(f"built {len(BINARIES)} binaries in {took(started)} into {final / 'bin'}")


# ----------------------------------------------------------------------------------------------------------- PKI


@dataclass(frozen=True, slots=True)
class Identity:
    """A client certificate: who a component is to the apiserver. All are cluster admins (system:masters):
    kubelab is a throwaway test cluster and the tests exercise RBAC with ServiceAccount tokens instead."""

    name: str
    common_name: str


IDENTITIES = (
    Identity("admin", "kubelab-admin"),
    Identity("kube-controller-manager", "kubelab-kube-controller-manager"),
    Identity("kube-scheduler", "kubelab-kube-scheduler"),
    Identity("kwok", "kubelab-kwok"),
)


def write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        # RFC 5280 wants the issuer's key id in every certificate it signs; Python 3.13's default TLS
        # verification (VERIFY_X509_STRICT) refuses a server certificate without it
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, one client cert per identity and the ServiceAccount signing key.
    Kept across `up` runs on the same state dir, so tokens and kubeconfigs stay valid."""
    if (pki / "sa.pub").is_file():
        return
    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelab-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(pki / "ca.key", key_pem(ca_key))
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    service_ip = next(iter(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1", str(service_ip))]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    server_cert = issue(ca_key, ca_cert, server_subject, server_key, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    write_private(pki / "apiserver.key", key_pem(server_key))
    (pki / "apiserver.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))

    for identity in IDENTITIES:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name),
            ]
        )
        cert = issue(ca_key, ca_cert, subject, key, ExtendedKeyUsageOID.CLIENT_AUTH)
        write_private(pki / f"{identity.name}.key", key_pem(key))
        (pki / f"{identity.name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    sa_key = ec.generate_private_key(ec.SECP256R1())
    public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_private(pki / "sa.key", key_pem(sa_key))
    (pki / "sa.pub").write_bytes(public)


def write_kubeconfig(path: Path, server: str, pki: Path, identity: str) -> None:
    """Certificates are embedded, so the file works on its own (copied, or read by any client)."""

    def data(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubelab", "cluster": {"server": server, "certificate-authority-data": data("ca.crt")}}],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate-data": data(f"{identity}.crt"),
                    "client-key-data": data(f"{identity}.key"),
                },
            }
        ],
        "contexts": [{"name": "kubelab", "context": {"cluster": "kubelab", "user": identity}}],
        "current-context": "kubelab",
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


# ------------------------------------------------------------------------------------------------------ state dir


@dataclass(frozen=True, slots=True)
class State:
    """The layout of a state dir: everything `up` writes, `down` and `status` read."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.root / "pids" / f"{component}.pid"

    def server(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["clusters"][0]["cluster"]["server"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter process state, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def running_pid(state: State, component: str) -> int | None:
    """The recorded PID if that process is alive and still runs the component's binary (PIDs get reused)."""
    try:
        pid = int(state.pid_file(component).read_text().strip())
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    if Path(argv0).name != component or proc_state(pid) in (None, "Z", "X"):
        return None
    return pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------------------------------------- apiserver client


class Api:
    """A minimal admin HTTPS client for the few calls `up` and `status` make (no kubernetes client dependency)."""

    def __init__(self, server: str, pki: Path) -> None:
        self.host, port = server.removeprefix("https://").rsplit(":", 1)
        self.port = int(port)
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(pki / "admin.crt", pki / "admin.key")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)
        try:
            payload = json.dumps(body) if body is not None else None
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def ready(self) -> bool:
        try:
            status, _ = self.call("GET", "/readyz", timeout=2.0)
        except OSError:
            return False
        return status == 200


# ---------------------------------------------------------------------------------------------------------- up


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


class Launcher:
    """Starts components as detached processes and, while `up` runs, notices any that die."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, component: Component) -> None:
        log_path = self.state.log(component.name)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                component.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **dict(component.env)},
                start_new_session=True,  # survives `up` exiting and a Ctrl-C in the caller's terminal
            )
        self.state.pid_file(component.name).write_text(f"{process.pid}\n")
        self.started.append((component.name, process))

    def check_alive(self, waiting_for: str) -> None:
        for name, process in self.started:
            code = process.poll()
            if code is not None:
                log_path = self.state.log(name)
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
                raise KubelabError(
                    f"{name}: exited with code {code} while waiting for {waiting_for}; see {log_path}\n{tail}"
                )

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(what)
            with contextlib.suppress(OSError):  # a refused or reset connection just means "not yet"
                if check():
                    return
            if time.monotonic() > deadline:
                raise KubelabError(
                    f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.state.root / 'logs'}"
                )
            time.sleep(0.2)

    def stop_all(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.terminate()
        for _, process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def components(
    state: State, bin_dir: Path, etcd_port: int, peer_port: int, api_port: int, apiserver_args: Sequence[str] = ()
) -> dict[str, Component]:
    pki = state.pki
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    return {
        "etcd": Component(
            "etcd",
            (
                str(bin_dir / "etcd"),
                "--name=kubelab",
                f"--data-dir={state.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kubelab={peer_url}",
                "--unsafe-no-fsync=true",  # test data: durability buys nothing, fsync costs every write
                "--log-level=warn",
            ),
        ),
        "kube-apiserver": Component(
            "kube-apiserver",
            (
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                # A loopback advertise address is only accepted without the endpoint reconciler.
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                *apiserver_args,
            ),
        ),
        "kube-controller-manager": Component(
            "kube-controller-manager",
            (
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={state.component_kubeconfig('kube-controller-manager')}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--cluster-name=kubelab",
            ),
        ),
        "kube-scheduler": Component(
            "kube-scheduler",
            (
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={state.component_kubeconfig('kube-scheduler')}",
                "--leader-elect=false",
                "--secure-port=0",
            ),
        ),
        "kwok": Component(
            "kwok",
            (
                str(bin_dir / "kwok"),
                f"--kubeconfig={state.component_kubeconfig('kwok')}",
                "--manage-all-nodes=true",
                f"--config={state.root / 'kwok-stages.yaml'}",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
            ),
            # kwok also merges ~/.kwok/kwok.yaml; a private HOME keeps a developer's own kwok setup out.
            env=(("HOME", str(state.root / "kwok-home")),),
        ),
    }


def node_body(name: str, ip: str) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        # No taint: the agent's manifests must run here without kwok-specific tolerations.
        "metadata": {"name": name, "labels": {**labels, "type": "kwok"}, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        # Nodes may carry status on create; kwok keeps these addresses, so pods get a hostIP like on a real node.
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    }


def probe_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubelab-probe"}},
        "spec": {
            "containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def condition(obj: Any, kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def up(state: State, timeout: float, apiserver_args: Sequence[str] = ()) -> Path:
    """Starts the cluster and returns the admin kubeconfig once a probe pod has been scheduled and turned Ready,
    which proves every component works, not just that it runs. ``apiserver_args`` go after kube-apiserver's own
    flags (a later flag wins)."""
    running = [name for name in BINARIES if running_pid(state, name)]
    if running:
        raise KubelabError(f"{state.root}: already running ({', '.join(running)}); run `down` first")
    bin_dir = build()
    started = time.monotonic()
    for sub in ("logs", "pids", "kubeconfigs", "kwok-home"):
        (state.root / sub).mkdir(parents=True, exist_ok=True)
    make_pki(state.pki)
    shutil.copyfile(STAGES_FILE, state.root / "kwok-stages.yaml")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    write_kubeconfig(state.kubeconfig, server, state.pki, "admin")
    for identity in IDENTITIES[1:]:
        write_kubeconfig(state.component_kubeconfig(identity.name), server, state.pki, identity.name)
    plan = components(state, bin_dir, etcd_port, peer_port, api_port, apiserver_args)
    api = Api(server, state.pki)
    launcher = Launcher(state)
    try:
        # The apiserver retries etcd on its own, so both start at once.
        launcher.start(plan["etcd"])
        launcher.start(plan["kube-apiserver"])
        launcher.wait("kube-apiserver /readyz", api.ready, timeout)
        say(f"kube-apiserver ready at {server} ({took(started)})")
        # A restart on an old state dir finds the Node leases of the previous kwok, which would make the new kwok
        # wait for them to expire (40s) before it serves those nodes.
        for node in NODE_NAMES:
            api.call("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            launcher.start(plan[name])
        for number, node in enumerate(NODE_NAMES, start=1):
            status, body = api.call("POST", "/api/v1/nodes", node_body(node, f"10.250.0.{number}"))
            if status not in (201, 409):
                raise KubelabError(f"Node/{node}: create failed ({status}): {body}")

        def nodes_ready() -> bool:
            _, nodes = api.call("GET", "/api/v1/nodes")
            return sum(condition(node, "Ready") == "True" for node in nodes.get("items", [])) >= len(NODE_NAMES)

        launcher.wait(f"{len(NODE_NAMES)} Nodes Ready (kwok)", nodes_ready, timeout)
        launcher.wait(
            "ServiceAccount default/default (kube-controller-manager)",
            lambda: api.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            timeout,
        )
        probe = f"kubelab-probe-{secrets.token_hex(3)}"
        status, body = api.call("POST", "/api/v1/namespaces/default/pods", probe_pod(probe))
        if status != 201:
            raise KubelabError(f"Pod/default/{probe}: create failed ({status}): {body}")
        launcher.wait(
            f"Pod/default/{probe} scheduled and Ready (kube-scheduler, kwok)",
            lambda: condition(api.call("GET", f"/api/v1/namespaces/default/pods/{probe}")[1], "Ready") == "True",
            timeout,
        )
        api.call("DELETE", f"/api/v1/namespaces/default/pods/{probe}")
    except BaseException:
        launcher.stop_all()
        raise
    say(f"up in {took(started)}: {len(BINARIES)} components, {len(NODE_NAMES)} nodes; state in {state.root}")
    return state.kubeconfig


# -------------------------------------------------------------------------------------------------- down, status


def down(state: State, timeout: float) -> None:
    """SIGTERM to every recorded, still-matching PID at once, SIGKILL to what outlives `timeout`; then verify."""
    targets = {name: pid for name in BINARIES if (pid := running_pid(state, name))}
    if not targets:
        say(f"nothing running in {state.root}")
        return
    for pid in targets.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    started = time.monotonic()

    def alive() -> dict[str, int]:
        return {name: pid for name, pid in targets.items() if running_pid(state, name) == pid}

    while alive() and time.monotonic() - started < timeout:
        time.sleep(0.1)
    for name, pid in alive().items():
        say(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = alive()
    if left:
        raise KubelabError(f"still running after SIGKILL: {', '.join(f'{n} (pid {p})' for n, p in left.items())}")
    stopped = ", ".join(f"{name} ({pid})" for name, pid in targets.items())
    say(f"stopped in {took(started)}: {stopped}")


def status(state: State) -> bool:
    """Prints one line per component plus /readyz; True when everything runs and the apiserver is ready."""
    total = 0.0
    all_up = True
    for name in BINARIES:
        pid = running_pid(state, name)
        if pid is None:
            all_up = False
            print(f"{name:<24} stopped")
            continue
        rss = rss_mib(pid)
        total += rss
        print(f"{name:<24} running  pid {pid:<8} rss {rss:7.1f} MiB")
    ready = state.kubeconfig.is_file() and Api(state.server(), state.pki).ready()
    print(f"{'total rss':<24} {total:.1f} MiB")
    print(f"/readyz                  {'ok' if ready else 'not answering'}")
    return all_up and ready


# ----------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubelab.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the binaries unless the cached build is complete")
    for name, text in (("up", "start a cluster"), ("down", "stop it"), ("status", "show what runs")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--state-dir", type=Path, required=True, help="certificates, etcd data, logs and PIDs")
        if name in ("up", "down"):
            sub.add_argument("--timeout", type=float, default=120.0 if name == "up" else 15.0, help="seconds per wait")
        if name == "up":
            sub.add_argument(
                "--apiserver-arg",
                action="append",
                default=[],
                metavar="--FLAG=VALUE",
                help="an extra kube-apiserver flag (repeatable), e.g. --apiserver-arg=--audit-log-path=FILE",
            )
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
            return 0
        state = State(args.state_dir.resolve())
        if args.command == "up":
            print(up(state, args.timeout, args.apiserver_arg))
            return 0
        if args.command == "down":
            down(state, args.timeout)
            return 0
        return 0 if status(state) else 1
    except KubelabError as error:
        say(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
