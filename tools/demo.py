"""`make demo`: the agent syncing example-repo/ into kubelab, promoting verified releases from staging to prod
through Git, and a bad release that rolls back in staging and never reaches prod.

Everything is real: a bare Git repository on disk, `gitsync run` as its own process, signed webhooks over HTTP on
127.0.0.1, and a local kube-apiserver with kwok nodes. The story, told as it happens:

1. the first commit of example-repo is synced to `podinfo-staging`; prod awaits its first promotion;
2. staging's release soaks (15 s) and the agent writes the promotion commit (printed with its trailers); prod
   renders the pinned chart and runs its first blue-green rollout;
3. a new image tag is pushed: staging runs the canary steps (25% -> 50% -> analysis -> 75% -> 100%), soaks, and
   the second promotion commit takes it to prod, where blue-green previews it and switches;
4. a bad release is pushed (its pods crash-loop): staging's pod-health analysis fails, traffic returns to stable,
   and nothing is promoted: prod keeps running the verified version;
5. `gitsync audit` on a fresh clone tells all of it from Git alone.

Run with `--keep` to leave kubelab running afterwards (the script prints how to stop it).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
GITSYNC = str(VENV_BIN / "gitsync")
console = Console() if sys.stdout.isatty() else Console(width=120)
APP, ENV, NAMESPACE = "podinfo", "staging", "podinfo-staging"
PROD, PROD_NAMESPACE = "prod", "podinfo-prod"


def sh(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_kubelab(state_dir: Path) -> Path:
    kubelab = [sys.executable, str(ROOT / "tools/kubelab/kubelab.py")]
    if subprocess.run([*kubelab, "status", "--state-dir", str(state_dir)], capture_output=True).returncode == 0:
        console.print(f"[dim]kubelab already running in {state_dir}[/dim]")
        return state_dir / "admin.kubeconfig"
    console.rule("starting kubelab (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    shutil.rmtree(state_dir, ignore_errors=True)  # a fresh cluster: no history from an earlier demo
    started = time.monotonic()
    out = subprocess.run([*kubelab, "up", "--state-dir", str(state_dir)], check=True, capture_output=True, text=True)
    kubeconfig = Path(out.stdout.strip().splitlines()[-1])
    console.print(f"kubelab up in {time.monotonic() - started:.1f} s; kubeconfig {kubeconfig}")
    return kubeconfig


class Demo:
    def __init__(self, work: Path, kubeconfig: Path) -> None:
        self.work = work
        self.kubeconfig = kubeconfig
        self.origin = work / "origin.git"
        self.checkout = work / "checkout"
        self.secret = b"demo-webhook-secret"
        self.port = free_port()
        self.agent: subprocess.Popen[bytes] | None = None

    # --- Git: the team's side ---------------------------------------------------------------------------
    def init_repo(self) -> None:
        sh("git", "init", "-q", "--bare", "-b", "main", str(self.origin))
        shutil.copytree(ROOT / "example-repo", self.checkout)
        sh("git", "init", "-q", "-b", "main", cwd=self.checkout)
        sh("git", "remote", "add", "origin", str(self.origin), cwd=self.checkout)
        self.commit("Initial release of podinfo 6.7.1")

    def commit(self, message: str, edit: Callable[[Path], None] | None = None) -> str:
        if edit:
            edit(self.checkout)
        sh("git", "add", "-A", cwd=self.checkout)
        env = ["-c", "user.name=Dana Developer", "-c", "user.email=dana@example.com"]
        sh("git", *env, "commit", "-q", "-m", message, cwd=self.checkout)
        sh("git", "push", "-q", "origin", "main", cwd=self.checkout)
        return sh("git", "rev-parse", "HEAD", cwd=self.checkout)

    def set_staging_values(self, tag: str, pod_labels: dict[str, str] | None = None) -> Callable[[Path], None]:
        def edit(checkout: Path) -> None:
            path = checkout / "environments/staging/values/podinfo.yaml"
            text = re.sub(r'(?m)^  tag: ".*"$', f'  tag: "{tag}"', path.read_text())
            text = text.split("podLabels:")[0]
            if pod_labels:
                text += "podLabels:\n" + "".join(f"  {k}: {v}\n" for k, v in pod_labels.items())
            path.write_text(text)

        return edit

    def webhook(self, revision: str) -> None:
        body = json.dumps({"ref": "refs/heads/main", "after": revision}).encode()
        signature = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/generic",
            data=body,
            headers={"Content-Type": "application/json", "X-Gitsync-Signature": signature},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            console.print(f"webhook -> HTTP {response.status}")

    # --- the agent ------------------------------------------------------------------------------------------
    def start_agent(self) -> None:
        (self.work / "webhook-secret").write_bytes(self.secret)
        config = {
            "repo": {"url": f"file://{self.origin}", "branch": "main"},
            "environments": [ENV, PROD],
            "pollInterval": "30s",
            "webhooks": {"generic": {"secretFile": str(self.work / "webhook-secret")}},
            "listen": f"127.0.0.1:{self.port}",
            "kubeconfig": str(self.kubeconfig),
            "cacheDir": str(self.work / "cache"),
            "selfHeal": True,
            "prune": True,
            "logFormat": "json",
        }
        (self.work / "agent.yaml").write_text(json.dumps(config, indent=2))
        log = (self.work / "agent.log").open("wb")
        self.agent = subprocess.Popen(
            [GITSYNC, "run", "--config", str(self.work / "agent.yaml")], stdout=log, stderr=log
        )
        console.print(f"agent started (pid {self.agent.pid}); logs: {self.work / 'agent.log'}")

    def stop_agent(self) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.agent.kill()

    # --- reading what happened --------------------------------------------------------------------------------
    def cli_json(self, *args: str) -> Any:
        out = subprocess.run(
            [GITSYNC, *args, "--kubeconfig", str(self.kubeconfig), "-o", "json"], capture_output=True, text=True
        )
        return json.loads(out.stdout) if out.stdout.strip() else None

    def watch_rollout(
        self,
        revision: str,
        done: Callable[[dict[str, Any]], bool],
        timeout: float = 120,
        env: str = ENV,
        namespace: str = NAMESPACE,
    ) -> dict[str, Any]:
        """Print each new rollout phase/step/weight until ``done`` says so."""
        from gitsync.adapters.kube import KubeCluster
        from gitsync.adapters.state import ConfigMapStateStore
        from gitsync.model import AppEnv
        from gitsync.strategy.control import describe_rollout

        store = ConfigMapStateStore(KubeCluster(self.kubeconfig))
        key = AppEnv(APP, env)
        seen = ""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = describe_rollout(store, key, namespace)
            line = f"{info.get('phase')} step={info.get('step')} weight={info.get('weight')}% {info.get('message', '')}"
            if info and line != seen and info.get("revision", "").startswith(revision[:12]):
                console.print(f"  rollout: {line}")
                seen = line
            if info and info.get("revision", "").startswith(revision[:12]) and done(info):
                return info
            self.check_agent()
            time.sleep(0.5)
        raise SystemExit(
            f"demo: rollout of {revision[:8]} did not finish in {timeout:.0f} s; see {self.work / 'agent.log'}"
        )

    def wait_for_sync(self, revision: str, timeout: float = 90) -> None:
        from gitsync.adapters.kube import KubeCluster
        from gitsync.adapters.state import ConfigMapStateStore
        from gitsync.history import History
        from gitsync.model import AppEnv

        history = History(ConfigMapStateStore(KubeCluster(self.kubeconfig)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = history.status(AppEnv(APP, ENV), NAMESPACE)
            if status.last_applied_revision == revision and status.result == "Succeeded":
                return
            self.check_agent()
            time.sleep(0.5)
        raise SystemExit(
            f"demo: {revision[:8]} was not applied and healthy in {timeout:.0f} s; see {self.work / 'agent.log'}"
        )

    def check_agent(self) -> None:
        if self.agent and self.agent.poll() is not None:
            raise SystemExit(f"demo: the agent exited with {self.agent.returncode}; see {self.work / 'agent.log'}")

    def show(self, *args: str) -> None:
        out = subprocess.run([GITSYNC, *args], capture_output=True, text=True)
        console.print(out.stdout.rstrip() or out.stderr.rstrip())

    def promotions(self) -> list[str]:
        """Promotion commits on the remote's main, newest first."""
        log = sh("git", "log", "main", "--format=%H %(trailers:key=Gitsync-Promoted-From,valueonly)", cwd=self.origin)
        return [line.split()[0] for line in log.splitlines() if len(line.split()) > 1]

    def wait_for_promotion(self, known: int, timeout: float = 120) -> str:
        """The next promotion commit the agent writes (after the soak); printed with its trailers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.promotions()
            if len(found) > known:
                console.print(sh("git", "log", "-1", "--format=%h %an: %B", found[0], cwd=self.origin))
                return found[0]
            self.check_agent()
            time.sleep(0.5)
        raise SystemExit(f"demo: no promotion commit in {timeout:.0f} s; see {self.work / 'agent.log'}")

    def pods(self, namespace: str = NAMESPACE) -> None:
        out = subprocess.run(
            [
                str(VENV_BIN / "kubectl"),
                "--kubeconfig",
                str(self.kubeconfig),
                "-n",
                namespace,
                "get",
                "deploy,pods",
                "-o",
                "wide",
            ],
            capture_output=True,
            text=True,
        )
        console.print(out.stdout.rstrip())


def run(demo: Demo) -> None:
    console.rule("1. the first commit: gitsync renders example-repo and syncs podinfo@staging; prod awaits promotion")
    demo.init_repo()
    first = sh("git", "rev-parse", "HEAD", cwd=demo.checkout)
    demo.show("render", "--repo", str(demo.checkout), "--env", ENV, "--digest")
    demo.show("render", "--repo", str(demo.checkout), "--env", PROD, "--digest")
    demo.start_agent()
    demo.wait_for_sync(first)
    console.print(f"[green]podinfo@staging is live at {first[:8]}[/green]")

    console.rule("2. staging's release soaks 15 s; the agent promotes it to prod by a commit, with its evidence")
    promoted = demo.wait_for_promotion(0)
    demo.watch_rollout(promoted, lambda info: info.get("phase") == "Healthy", 120, PROD, PROD_NAMESPACE)
    console.print(f"[green]podinfo@prod is live at {promoted[:8]} (pinned to staging's {first[:8]})[/green]")
    demo.pods(PROD_NAMESPACE)

    console.rule("3. a new version: push + webhook; staging's canary, then the promotion and prod's blue-green")
    sh("git", "pull", "-q", "--rebase", "origin", "main", cwd=demo.checkout)
    good = demo.commit("podinfo 6.7.2: faster start-up", demo.set_staging_values("6.7.2"))
    started = time.monotonic()
    demo.webhook(good)
    demo.watch_rollout(good, lambda info: info.get("phase") in ("Healthy", "Aborted"), timeout=180)
    console.print(f"[green]canary of {good[:8]} in staging completed in {time.monotonic() - started:.1f} s[/green]")
    promoted = demo.wait_for_promotion(1)
    demo.watch_rollout(promoted, lambda info: info.get("phase") == "Healthy", 120, PROD, PROD_NAMESPACE)
    console.print(f"[green]6.7.2 reached prod {time.monotonic() - started:.1f} s after the push[/green]")
    demo.pods(PROD_NAMESPACE)

    console.rule("4. a bad release: its pods crash-loop; staging rolls back and prod never sees it")
    sh("git", "pull", "-q", "--rebase", "origin", "main", cwd=demo.checkout)
    bad = demo.commit(
        "podinfo 6.8.0: new cache layer", demo.set_staging_values("6.8.0", {"gitsync.dev/fault": "crashloop"})
    )
    started = time.monotonic()
    demo.webhook(bad)
    info = demo.watch_rollout(bad, lambda info: info.get("phase") in ("Aborted", "Healthy"), timeout=120)
    colour = "green" if info.get("phase") == "Aborted" else "red"
    elapsed = time.monotonic() - started
    console.print(f"[{colour}]{info.get('phase')} after {elapsed:.1f} s: {info.get('abortReason', '')}[/{colour}]")
    for item in info.get("evidence", []):
        console.print(f"  evidence: {item}")
    time.sleep(17)  # longer than the soak: a verified release would have been promoted by now
    promoted_count = len(demo.promotions())
    colour = "green" if promoted_count == 2 else "red"
    console.print(f"[{colour}]{promoted_count} promotion commits: 6.8.0 was never promoted to prod[/{colour}]")
    demo.pods(PROD_NAMESPACE)

    console.rule("history (what ran in staging, when, and who committed it)")
    demo.show("history", "--env", ENV, "--kubeconfig", str(demo.kubeconfig))
    console.rule("5. the audit: every release, promotion and its evidence, from a fresh clone and Git alone")
    clone = demo.work / "auditor-clone"
    sh("git", "clone", "-q", str(demo.origin), str(clone))
    demo.show("audit", "--repo", str(clone))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".kubelab/demo")
    parser.add_argument("--keep", action="store_true", help="leave kubelab running afterwards")
    args = parser.parse_args()
    kubeconfig = start_kubelab(args.state_dir)
    work = Path(tempfile.mkdtemp(prefix="gitsync-demo-"))
    demo = Demo(work, kubeconfig)
    try:
        run(demo)
    finally:
        demo.stop_agent()
        if args.keep:
            console.print(
                f"kubelab keeps running: {Path(sys.executable).with_name('kubectl')} --kubeconfig {kubeconfig} ...; "
                f"stop it with: {sys.executable} tools/kubelab/kubelab.py down --state-dir {args.state_dir}"
            )
        else:
            subprocess.run(
                [sys.executable, str(ROOT / "tools/kubelab/kubelab.py"), "down", "--state-dir", str(args.state_dir)],
                check=False,
            )


if __name__ == "__main__":
    main()
