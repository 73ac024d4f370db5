"""A Secret value never leaves the process, even when the API server quotes it in an error message.

``stringData: {pin: 73317331}`` (an unquoted number) is refused by the server with a message that quotes the
value. The test syncs it with ``gitsync sync`` into kubelab and greps every sink a sync writes to: the command's
output, the state ConfigMaps (status, history, inventory) and the Events of the namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corpus import CHART, ENV, make_repo
from kubernetes import client

from gitsync.redact import scrub, secret_values

pytestmark = pytest.mark.cluster

PIN = "73317331"
PLANTED = (PIN, "NzMzMTczMzE=", "s3cr3t-pl4nted", "czNjcjN0LXBsNG50ZWQ=")
SECRET = (
    f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  pin: {PIN}\n  password: s3cr3t-pl4nted\n"
)


def test_a_refused_secret_value_appears_in_no_sink(
    kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path,
        {f"{CHART}/templates/secret.yaml": SECRET, f"{ENV}/env.yaml": f"namespace: {namespace}\napps: [web]\n"},
    )
    gitsync = str(Path(sys.executable).with_name("gitsync"))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    done = subprocess.run(
        [gitsync, "sync", "--repo", str(repo), "--env", "dev", "--kubeconfig", str(kubelab.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Secret/" in done.stdout + done.stderr, "the refusal is reported, naming the Secret"
    core = client.CoreV1Api(kube_api)
    sinks = {
        "output": done.stdout + done.stderr,
        "configmaps": json.dumps([cm.data for cm in core.list_namespaced_config_map(namespace).items]),
        "events": json.dumps([e.message for e in core.list_namespaced_event(namespace).items]),
    }
    found = {sink: [p for p in PLANTED if p in text] for sink, text in sinks.items()}
    assert found == {sink: [] for sink in sinks}
    assert core.list_namespaced_config_map(namespace, field_selector="metadata.name=web").items == [], "nothing applied"


def test_scrub_covers_values_as_written_base64_and_json_quoted() -> None:
    body = {"kind": "Secret", "data": {"a": "aHVudGVyMg=="}, "stringData": {"pin": 73317331, "q": 'say "hi"!'}}
    message = 'got 73317331, "aHVudGVyMg==" is hunter2; say \\"hi\\"! NzMzMTczMzE= ok'
    assert scrub(message, secret_values(body)) == 'got ***, "***" is ***; *** *** ok'
    assert secret_values({"kind": "ConfigMap", "data": {"a": "visible"}}) == ()
