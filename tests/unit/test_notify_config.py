"""``notifications:`` in agent.yaml: typed receivers, and one-line errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync.notify import Format, Notice, Receiver
from gitsync.runtime.config import ConfigError, load

HEAD = """\
repo: {url: https://git.example.com/org/deploy.git}
environments: [staging]
notifications:
"""


def load_with(tmp_path: Path, receivers: str) -> tuple[Receiver, ...]:
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD + receivers)
    return load(path, environ={}).notifications


def test_receivers_are_typed_and_filters_default_to_everything(tmp_path: Path) -> None:
    ops, team = load_with(
        tmp_path,
        """\
  - {name: ops, url: "https://hooks.example.com/gitsync", secretFile: /etc/gitsync/notify-key}
  - name: team
    format: slack
    urlFile: /etc/gitsync/slack-url
    events: [sync-failed, rollout-aborted]
    envs: [prod]
    apps: [podinfo]
""",
    )
    assert ops == Receiver(
        "ops", Format.GENERIC, url="https://hooks.example.com/gitsync", secret_file=Path("/etc/gitsync/notify-key")
    )
    assert team.format is Format.SLACK and team.url_file == Path("/etc/gitsync/slack-url")
    assert team.events == {Notice.SYNC_FAILED, Notice.ROLLOUT_ABORTED}
    assert (team.envs, team.apps) == ({"prod"}, {"podinfo"})


def test_no_notifications_is_none(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD.replace("notifications:\n", ""))
    assert load(path, environ={}).notifications == ()


@pytest.mark.parametrize(
    ("receivers", "error"),
    [
        (
            "  - {name: a, url: 'https://x.example', secretFile: /k, events: [sync-failed, deployed]}\n",
            "agent.yaml:4: events: unknown event 'deployed' (known: sync-failed,",
        ),
        (
            "  - name: a\n    format: slack\n    url: https://hooks.slack.com/services/T/B/X\n",
            "agent.yaml:6: url: a Slack webhook URL is a credential: put it in a file and set urlFile",
        ),
        (
            "  - {name: a, url: 'https://x.example'}\n",
            "agent.yaml:4: notifications.0: a generic receiver needs secretFile",
        ),
        ("  - {name: a, secretFile: /k}\n", "agent.yaml:4: notifications.0: set url or urlFile (one of them)"),
        (
            "  - {name: a, url: 'https://u:p@x.example', secretFile: /k}\n",
            "agent.yaml:4: url: expected an http(s) URL without credentials",
        ),
        (
            "  - {name: a, urlFile: /u, secretFile: /k}\n  - {name: a, urlFile: /v, secretFile: /k}\n",
            "agent.yaml:5: name: 'a' is used by another receiver",
        ),
        ("  - {name: a, urlFile: /u, format: teams}\n", "agent.yaml:4: format: expected one of generic, slack"),
        ("  - {name: a, urlFile: /u, secretFile: /k, envs: prod}\n", "agent.yaml:4: envs: expected a list of names"),
        ("  - {name: a, urlFile: /u, secretFile: /k, when: always}\n", "agent.yaml:4: when: unknown field"),
        ("  {name: a}\n", "agent.yaml:3: notifications: expected a list of receivers"),
    ],
)
def test_a_bad_receiver_is_one_line_naming_file_line_and_field(tmp_path: Path, receivers: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, receivers)
    assert str(e.value).startswith(error)
    assert "\n" not in str(e.value)
    assert "u:p@" not in str(e.value)
