"""Log lines as a user reads them: JSON on stderr with event, level, fields and the bound app/env; credentials
redacted; library warnings in the same format; and nothing at all, not even the structlog import, below the level.

Each case runs in its own interpreter: ``configure`` owns the process-wide root logger and structlog's settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest


def run(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)], capture_output=True, text=True, timeout=60, check=True
    )


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


def test_a_line_below_the_level_is_not_written_and_structlog_is_not_imported() -> None:
    result = run("""
        import sys
        import gitsync.log as log
        log.configure("json", "ERROR")
        log.get("gitsync.sync").info("sync.applied", token="s")
        log.get("gitsync.sync").warning("sync.slow")
        print("structlog" in sys.modules)
    """)
    assert result.stdout == "False\n"
    assert result.stderr == ""


def test_an_enabled_line_is_json_with_event_level_fields_and_bound_context() -> None:
    result = run("""
        import structlog
        import gitsync.log as log
        log.configure("json", "INFO")
        with structlog.contextvars.bound_contextvars(app="web", env="prod"):
            log.get("gitsync.sync").info("sync.applied", revision="abc123", created=3)
        log.get("gitsync.sync").debug("sync.detail")
    """)
    [line] = json_lines(result.stderr)
    expected = {
        "event": "sync.applied",
        "level": "info",
        "app": "web",
        "env": "prod",
        "revision": "abc123",
        "created": 3,
    }
    assert line.items() >= expected.items()
    assert line["timestamp"].endswith("Z")


@pytest.mark.parametrize("field", ["token", "password", "authorization", "git_token", "Private_Key"])
def test_a_field_named_like_a_credential_is_redacted(field: str) -> None:
    result = run(f"""
        import gitsync.log as log
        log.configure("json", "INFO")
        log.get().warning("git.fetch_failed", url="https://git.example/repo", {field}="hunter2-value")
    """)
    [line] = json_lines(result.stderr)
    assert line[field] == "<redacted>"
    assert line["url"] == "https://git.example/repo"
    assert "hunter2-value" not in result.stderr


def test_a_library_warning_comes_out_as_json_through_the_same_handler() -> None:
    result = run("""
        import logging
        import structlog
        import gitsync.log as log
        log.configure("json", "INFO")
        with structlog.contextvars.bound_contextvars(app="web", env="prod"):
            logging.getLogger("urllib3.connectionpool").warning("Retrying %s", "GET /api")
            logging.getLogger("urllib3.connectionpool").info("Starting new HTTPS connection")
    """)
    [line] = json_lines(result.stderr)
    assert line.items() >= {"event": "Retrying GET /api", "level": "warning", "app": "web", "env": "prod"}.items()
