"""A real OpenSSH server on 127.0.0.1 for the Git-over-SSH tests: Debian's ``sshd`` run as its own process with a
generated host key, config and authorized key in a temporary directory (no system service, no port 22).

A machine without ``sshd`` FAILS these tests with the command that installs it (``make deps``), never skips them:
the SSH path is what deployments use, and a silent skip would leave it untested.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TRIES = 200
"""Connection attempts (50 ms apart) before sshd counts as failed to start: a readiness bound, not a timing check."""


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair at ``path`` (no passphrase); returns the private key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the servers the tests start: git daemon, sshd)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class SshServer:
    """A running sshd: the user it lets in, its port, a client key it authorises and a known_hosts naming it."""

    user: str
    port: int
    client_key: Path
    known_hosts: Path
    host_key: Path

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"


def _sshd() -> str:
    found = shutil.which("sshd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        pytest.fail("sshd not found: install openssh-server (make deps) to run the Git-over-SSH tests", pytrace=False)
    return found


@contextmanager
def running_sshd(root: Path) -> Iterator[SshServer]:
    """sshd in the foreground (``-D -e``), logging to ``root/sshd.log``, stopped on exit. Runs as the current
    user; as root it needs the privilege separation directory ``/run/sshd``, which it creates if missing."""
    root.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    host_key = keygen(root / "host_key")
    client_key = keygen(root / "client_key")
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "UsePAM no\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        # the temporary directory lies under world-writable /tmp, which StrictModes refuses
        "StrictModes no\n"
        f"AllowUsers {user}\n"
        "LogLevel VERBOSE\n"
    )
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.with_suffix('.pub').read_text()}")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([_sshd(), "-D", "-e", "-f", str(config)], stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, port, log)
        yield SshServer(user, port, client_key, known_hosts, host_key)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    for _ in range(STARTUP_TRIES):
        if process.poll() is not None:
            pytest.fail(f"sshd exited with {process.returncode} at start: {log.read_text().strip()}", pytrace=False)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text().strip()}", pytrace=False)
