"""`gitsync status` points a check's error at the values file and line that declare the field at fault."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

import renderers
from gitsync.cli.status import AppStatus, located
from gitsync.health import Health
from gitsync.history import Status
from gitsync.model import HealthStatus, SyncState

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
QUERY = 'errors{app="podinfo"'


def test_a_refused_query_is_named_by_file_line_and_field(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    values_file = repo / "environments" / "staging" / "values" / "podinfo.yaml"
    values = yaml.safe_load(values_file.read_text())
    check = {"name": "errors", "type": "prometheus", "query": QUERY, "successCondition": "result[0] < 0.05"}
    values["rollout"] = {
        "strategy": "canary",
        "analysis": {
            "prometheus": {"address": "http://prom:9090"},
            "checks": [{"name": "pods", "type": "podHealth"}, check],
        },
    }
    values_file.write_text(yaml.safe_dump(values, sort_keys=False))
    line = next(i for i, text in enumerate(values_file.read_text().splitlines(), 1) if "query:" in text)
    rendered = renderers.render_app(repo, "staging", "podinfo")
    refused = f"rollout.analysis.checks[1].query: http://prom:9090: query '{QUERY}': HTTP 400: 1:20: parse error"
    status = AppStatus(
        "podinfo", "staging", "ns", SyncState.SYNCED, Health(HealthStatus.HEALTHY), "", "", "", "", (),
        Status("podinfo", "staging"),
        {"phase": "Paused", "analysis": [{"check": "errors", "message": refused}, {"check": "pods", "message": "ok"}]},
    )  # fmt: skip
    shown = located(repo, rendered, status).rollout["analysis"]
    assert shown[0]["message"] == f"environments/staging/values/podinfo.yaml:{line}: {refused}"
    assert shown[1]["message"] == "ok"
