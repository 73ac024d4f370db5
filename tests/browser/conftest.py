"""Fixtures for the dashboard's browser tests: the agent-as-a-process fixtures of ``tests/e2e/agentlab`` and the
system Chromium (Debian's ``chromium``, ``make deps``) driven by Playwright, which downloads no browser."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from agentlab import agents, core, prod_namespace, upstream

__all__ = ["agents", "browser", "core", "prod_namespace", "upstream"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Chromium, started once per session; a test that cannot have it fails and says how to get it."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"  # never fetch a browser at run time
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"playwright is not installed ({e}): run `make venv` (it is a dev dependency)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make deps`)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as e:  # whatever keeps Chromium from starting, the test says it
            pytest.fail(f"cannot start {CHROMIUM} {' '.join(CHROMIUM_ARGS)}: {e}")
        yield launched
        launched.close()
