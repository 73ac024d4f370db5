"""Kubeconfigs as users write them, against kubelab: ``KubeCluster`` reads static credentials (client certificate,
ServiceAccount token inline or in a file) itself, without importing the ``kubernetes`` package; an ``exec`` plugin
goes through the official client; RBAC denials and broken configurations are one line that names the object or
the file and never shows the token.
"""

from __future__ import annotations

import base64
import datetime
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from gitsync.adapters.kube import KubeCluster
from gitsync.errors import ForbiddenError, GitsyncError, TerminalError
from gitsync.model import ObjectId

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
GITSYNC = str(Path(sys.executable).parent / "gitsync")
READER = "reader"
"""The ServiceAccount of these tests: its Role reads ConfigMaps in the test namespace and nothing else."""

PROBE = textwrap.dedent("""
    import sys
    from gitsync.adapters.kube import KubeCluster
    from gitsync.model import ObjectId

    live = KubeCluster(sys.argv[1]).get(ObjectId.parse(sys.argv[2]))
    print(live["data"]["colour"] if live else "missing", "kubernetes" in sys.modules)
""")
"""Reads one ConfigMap in a fresh interpreter; prints its colour and whether the kubernetes package was imported."""


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, user: dict[str, Any]) -> Path:
    cluster = {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": READER, "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": READER}}],
        "current-context": "lab",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def lab_ca(kubelab: Any) -> bytes:
    admin = yaml.safe_load(Path(kubelab.kubeconfig).read_text())
    return base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])


def other_ca() -> bytes:
    """A self-signed CA that did not sign the API server's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-kubelab-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def probe(kubeconfig: Path, ref: str) -> tuple[str, bool]:
    """(the ConfigMap's colour, whether ``kubernetes`` was imported), read by a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(kubeconfig), ref], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    colour, imported = done.stdout.split()
    return colour, imported == "True"


@pytest.fixture
def reader_token(kube_api: client.ApiClient, namespace: str) -> str:
    """A ServiceAccount token (TokenRequest API) whose Role reads ConfigMaps in ``namespace``; one ConfigMap,
    ``settings``, is there to read."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": READER}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": READER}, "rules": [rule]})
    binding = {
        "metadata": {"name": READER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER},
        "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": namespace}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"colour": "blue"}})
    minted = core.create_namespaced_service_account_token(READER, namespace, {"spec": {"expirationSeconds": 3600}})
    return str(minted.status.token)


@pytest.mark.usefixtures("reader_token")  # for the ConfigMap it creates
def test_the_admin_kubeconfig_is_read_without_the_kubernetes_package(kubelab: Any, namespace: str) -> None:
    assert probe(kubelab.kubeconfig, f"ConfigMap/{namespace}/settings") == ("blue", False)


def test_a_service_account_token_reads_what_its_role_grants_and_is_denied_the_rest(
    kubelab: Any, reader_token: str, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kubelab.server, lab_ca(kubelab), {"token": reader_token})
    assert probe(kubeconfig, f"ConfigMap/{namespace}/settings") == ("blue", False)

    cluster = KubeCluster(kubeconfig)
    assert "settings" in [cm["metadata"]["name"] for cm in cluster.list("", "ConfigMap", namespace).items]
    secret = ObjectId("", "Secret", namespace, "db")
    with pytest.raises(ForbiddenError) as denied:
        cluster.get(secret)
    message = str(denied.value)
    assert message.startswith(f"{secret}: forbidden: ")
    assert f"system:serviceaccount:{namespace}:{READER}" in message
    assert "\n" not in message and reader_token not in message

    with pytest.raises(ForbiddenError) as denied:
        cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": namespace}})
    assert str(denied.value).startswith(f"ConfigMap/{namespace}/new: forbidden: ")


def test_a_token_file_is_read_relative_to_the_kubeconfig(
    kubelab: Any, reader_token: str, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "sa.token").write_text(reader_token + "\n")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kubelab.server, lab_ca(kubelab), {"tokenFile": "sa.token"})
    assert probe(kubeconfig, f"ConfigMap/{namespace}/settings") == ("blue", False)


def test_an_exec_plugin_goes_through_the_official_client(
    kubelab: Any, reader_token: str, namespace: str, tmp_path: Path
) -> None:
    runs = tmp_path / "plugin-runs"
    plugin = tmp_path / "credential.py"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": reader_token},
    }
    plugin.write_text(
        textwrap.dedent(f"""
            import json, pathlib
            with pathlib.Path({str(runs)!r}).open("a") as runs:
                runs.write("run\\n")
            print(json.dumps({credential!r}))
        """)
    )
    exec_config = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(plugin)],
        "interactiveMode": "Never",
    }
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kubelab.server, lab_ca(kubelab), {"exec": exec_config})

    assert probe(kubeconfig, f"ConfigMap/{namespace}/settings") == ("blue", True)
    assert runs.read_text().splitlines() == ["run"]
    with pytest.raises(ForbiddenError, match=f"^Secret/{namespace}/db: forbidden: "):
        KubeCluster(kubeconfig).get(ObjectId("", "Secret", namespace, "db"))


def test_a_wrong_certificate_authority_is_one_line_naming_the_server_without_the_token(
    kubelab: Any, reader_token: str, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kubelab.server, other_ca(), {"token": reader_token})
    with pytest.raises(GitsyncError) as failed:
        KubeCluster(kubeconfig).get(ObjectId("", "Namespace", "", "default"))
    message = str(failed.value)
    assert kubelab.server in message and "CERTIFICATE_VERIFY_FAILED" in message
    assert "\n" not in message and reader_token not in message

    result = subprocess.run(
        [GITSYNC, "diff", "--repo", str(EXAMPLE), "--env", "staging", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert kubelab.server in result.stderr and reader_token not in result.stderr + result.stdout


def test_a_missing_kubeconfig_is_one_line_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "kubeconfig"
    with pytest.raises(TerminalError) as failed:
        KubeCluster(missing)
    message = str(failed.value)
    assert message.startswith(f"{missing}: cannot load cluster configuration")
    assert "\n" not in message


def test_credentials_that_are_not_base64_are_one_line_naming_the_file_without_them(tmp_path: Path) -> None:
    """A user with a key but no certificate goes to the official client, which decodes the CA data itself."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', certificate-authority-data: planted-ca}}]\n"
        "users: [{name: u, user: {token: planted-token, client-key-data: planted-key}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    with pytest.raises(TerminalError) as failed:
        KubeCluster(kubeconfig)
    message = str(failed.value)
    assert message.startswith(f"{kubeconfig}: cannot load cluster configuration")
    assert "\n" not in message and "planted" not in message
