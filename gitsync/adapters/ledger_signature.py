"""Signing and checking ledger lines with SSH keys (``ssh-keygen -Y``, namespace ``gitsync-ledger``).

Why: whoever may push ``refs/notes/gitsync`` could otherwise add a "staging Succeeded" line and have the agent
promote that release and sign the promotion itself. An agent with ``repo.write.signingKeyFile`` signs each line
it writes (``SshLineSigner``, given to ``NotesLedger``); one with ``repo.verify.allowedSignersFile`` trusts only
lines a key of that file signed (``SshLedgerVerifier``, given to ``Promotions``), and ``gitsync audit
--allowed-signers`` marks each line.

Contract: a line never changes, so its seal is judged once per process (two ``ssh-keygen`` runs: find-principals,
then verify) and kept by the hash of the line; what a signature covers is ``gitsync.ledger.split_signature``.
Nothing secret is logged: a skipped line is named by its env, app and commit.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from gitsync import log as logging
from gitsync.errors import TerminalError
from gitsync.ledger import SIGNATURE_NAMESPACE, LedgerEntry, Seal, split_signature

__all__ = ["SshLedgerVerifier", "SshLineSigner", "log_untrusted"]

TIMEOUT = 30.0
"""Seconds one ``ssh-keygen`` may take (it reads a key and a line: milliseconds)."""
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")

log = logging.get("gitsync.ledger_signature")


def _keygen(*args: str, data: str = "") -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args], input=data, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TerminalError(f"ssh-keygen -Y {args[1]}: {e}") from e


class SshLineSigner:
    """The signature of a line with the agent's SSH key (``repo.write.signingKeyFile``): the base64 body of
    ``ssh-keygen -Y sign``'s armored output, one line."""

    def __init__(self, key: Path) -> None:
        self._key = key

    def __call__(self, line: str) -> str:
        done = _keygen("-Y", "sign", "-n", SIGNATURE_NAMESPACE, "-f", str(self._key), data=line)
        body = [part for part in done.stdout.splitlines() if part and part not in _ARMOR]
        if done.returncode != 0 or not body:
            problem = done.stderr.strip().splitlines()[-1:] or ["no signature written"]
            raise TerminalError(f"{self._key}: cannot sign the ledger line: {problem[0]}")
        return "".join(body)


def log_untrusted(entry: LedgerEntry, seal: Seal) -> None:
    """The agent's one event per untrusted line: it counts as if absent."""
    log.warning("ledger.untrusted", env=entry.env, app=entry.app, revision=entry.revision, signature=seal.value)


class SshLedgerVerifier:
    """``ports.LedgerVerifier``: whether a ledger line was signed by a key of the allowed signers file (the
    format ``ssh-keygen -Y verify`` reads; a key whose ``namespaces=`` leaves out ``gitsync-ledger`` may sign
    commits but no line). ``report`` is told of each line that is not verified, once."""

    def __init__(
        self, allowed_signers: Path, *, report: Callable[[LedgerEntry, Seal], None] | None = log_untrusted
    ) -> None:
        self._allowed = allowed_signers
        self._report = report
        self._seals: dict[bytes, Seal] = {}
        self._lock = threading.Lock()

    def seal(self, entry: LedgerEntry) -> Seal:
        key = hashlib.sha256(entry.line.encode()).digest()
        with self._lock:
            known = self._seals.get(key)
        if known is not None:
            return known
        seal = self._judge(entry.line)
        with self._lock:
            first = key not in self._seals
            self._seals[key] = seal
        if first and seal is not Seal.VERIFIED and self._report is not None:
            self._report(entry, seal)
        return seal

    def _judge(self, line: str) -> Seal:
        try:
            payload, signature = split_signature(line)
        except ValueError:
            return Seal.BAD
        if not signature:
            return Seal.UNSIGNED
        with tempfile.TemporaryDirectory(prefix="gitsync-sig-") as scratch:
            armored = Path(scratch) / "line.sig"
            armored.write_text(f"{_ARMOR[0]}\n{signature}\n{_ARMOR[1]}\n")
            found = _keygen("-Y", "find-principals", "-s", str(armored), "-f", str(self._allowed))
            for principal in found.stdout.splitlines() if found.returncode == 0 else ():
                checked = _keygen(
                    "-Y", "verify", "-f", str(self._allowed), "-I", principal, "-n", SIGNATURE_NAMESPACE,
                    "-s", str(armored), data=payload,
                )  # fmt: skip
                if checked.returncode == 0:
                    return Seal.VERIFIED
        return Seal.BAD
