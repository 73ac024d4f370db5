"""The image holds what the agent needs at run time and nothing of the build: what deploy/README.md reports."""

from __future__ import annotations

import json

import pytest
from imagelab import podman

pytestmark = pytest.mark.image  # tests/conftest.py marks by directory too late for `-m image`

# Runs inside the image (as its user): what is there, as JSON.
SURVEY = """
import importlib.metadata as md, json, os, shutil, sys, sysconfig

site = sysconfig.get_paths()["purelib"]
print(json.dumps({
    "python": sys.executable,
    "commands": {
        c: shutil.which(c) for c in ("gitsync", "git", "ssh", "ssh-keygen", "gpg", "tini", "pip", "gcc", "cc", "make")
    },
    "distributions": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "site": sorted(os.listdir(site)),
    "git_dirs": [r for top in ("/opt", "/etc", "/usr/local", "/srv", "/home")
                 for r, dirs, _ in os.walk(top) if ".git" in dirs],
    "build_dirs": [p for p in ("/src", "/opt/venv/src") if os.path.exists(p)],
}))
"""


def test_the_image_holds_the_agent_and_no_build_leftovers(gitsync_image: str) -> None:
    done = podman("run", "--rm", "--read-only", "--entrypoint", "python", gitsync_image, "-c", SURVEY, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    commands = found["commands"]
    assert found["python"] == "/opt/venv/bin/python"
    assert commands["gitsync"] == "/opt/venv/bin/gitsync"
    assert commands["git"] and commands["ssh"] and commands["tini"] == "/usr/bin/tini"
    assert commands["ssh-keygen"] and commands["gpg"], "both kinds of signed commits can be verified (repo.verify)"
    assert not commands["gcc"] and not commands["cc"] and not commands["make"], "no compilers"
    assert commands["pip"] is None or not commands["pip"].startswith("/opt/venv"), "pip stays in the build stage"
    assert "gitsync" in found["distributions"]
    assert "pip" not in found["distributions"] and "setuptools" not in found["distributions"]
    assert {"tests", "example-repo", "bench", "tools"}.isdisjoint(found["site"]), "only the packages are installed"
    assert not found["git_dirs"], "no .git directories"
    assert not found["build_dirs"], "the build stage's sources stay behind"
