"""Golden renders of example-repo: any change to the chart, the values or the renderer shows up as a diff here.

Regenerate after an intended change, then review the diff like code:

    GITSYNC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from renderers import render_env
from renderers.render import Trees
from renderers.yamlio import dump

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_example_repo_matches_golden(env: str, pinned_example: tuple[Path, Trees]) -> None:
    """prod renders from a copy of example-repo with a pin (example-repo itself has none until the first
    promotion); its chart is the same, and the pin carries the image tag prod runs."""
    repo, trees = pinned_example
    rendered = render_env(repo, env, revision="0123456789abcdef0123456789abcdef01234567", trees=trees)
    text = "".join(dump(m.body, explicit_start=True) for r in rendered for m in r.manifests)
    text += "".join(f"# digest {r.app_env}: {r.digest}\n" for r in rendered)
    golden = GOLDEN / f"podinfo-{env}.yaml"
    if os.environ.get("GITSYNC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} is stale; see this file's docstring to regenerate"
