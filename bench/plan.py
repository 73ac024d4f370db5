#!/usr/bin/env python3
"""Plan benchmark: how long `gitsync plan` takes on example-repo, the cost a plan comment adds to every push.

    .venv/bin/python bench/plan.py

example-repo is committed to a temporary Git repository with prod pinned (as the first promotion writes it), then
one pull request's worth of change is committed on top: staging's image tag and a template line (so staging
changes, and prod shows what waits for promotion). Timed, best and median of 15 each:
- `plan_change` + `markdown` in a running process (what the agent does on a pull-request event), with the tree
  cache warm (each commit extracted once; later pushes of the same pull request reuse it) and cold (a fresh cache
  directory each time: two `git archive` runs);
- `gitsync plan -o markdown` as a whole process (what a CI job pays), start-up included.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gitsync.adapters.trees import LocalTrees  # noqa: E402
from gitsync.change_plan import markdown, plan_change  # noqa: E402
from gitsync.promoted_file import with_pin  # noqa: E402

RUNS = 15
IDENTITY = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def repository(root: Path) -> tuple[Path, str, str]:
    repo = root / "example"
    shutil.copytree(ROOT / "example-repo", repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "example-repo")
    pin = with_pin(None, "podinfo", git(repo, "rev-parse", "HEAD"), "staging", {"image": {"tag": "6.7.0"}})
    (repo / "environments/prod/promoted.yaml").write_text(pin)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "promote podinfo to prod")
    base = git(repo, "rev-parse", "HEAD")
    for name, old, new in (
        ("environments/staging/values/podinfo.yaml", '"6.7.1"', '"6.8.0"'),
        ("apps/podinfo/templates/deployment.yaml", "revisionHistoryLimit: 5", "revisionHistoryLimit: 6"),
    ):
        path = repo / name
        path.write_text(path.read_text().replace(old, new))
    git(repo, "commit", "-q", "-am", "podinfo 6.8.0")
    return repo, base, git(repo, "rev-parse", "HEAD")


def timed(run: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def show(label: str, samples: list[float]) -> None:
    print(f"{label:<58} best {min(samples) * 1000:7.1f} ms   median {statistics.median(samples) * 1000:7.1f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, base, head = repository(root)
        warm = LocalTrees(repo, cache_dir=root / "trees")
        comment = markdown(plan_change(warm, base, head))
        print(f"example-repo, {base[:7]}..{head[:7]}: comment of {len(comment):,} characters")
        warm_run = timed(lambda: markdown(plan_change(warm, base, head)))
        show("in-process plan_change + markdown, tree cache warm", warm_run)
        fresh = iter(range(RUNS))

        def cold() -> str:
            trees = LocalTrees(repo, cache_dir=root / f"cold-{next(fresh)}")
            return markdown(plan_change(trees, base, head))

        show("in-process plan_change + markdown, tree cache cold", timed(cold))
        command = [str(Path(sys.executable).parent / "gitsync"), "plan", "--repo", str(repo), "--base", base]
        env = {**os.environ, "XDG_CACHE_HOME": str(root / "xdg")}
        show(
            "`gitsync plan -o markdown` as a process (cache warm)",
            timed(lambda: subprocess.run([*command, "--head", head, "-o", "markdown"], env=env, capture_output=True)),
        )


if __name__ == "__main__":
    main()
