"""Signing and checking ledger lines with SSH keys (``ssh-keygen -Y``, namespace ``gitsync-ledger``).

Why: whoever may push ``refs/notes/gitsync`` could otherwise add a "staging Succeeded" line and have the agent
promote that release and sign the promotion itself. An agent with ``repo.write.signingKeyFile`` signs each line
it makes (``SshLineSigner``, given to ``NotesLedger``), and writes a line made before (kept in a status) only when
it verifies as signed by that same key (``SshLineSigner.owns``: the same check, against the agent's own public key
alone); one with ``repo.verify.allowedSignersFile`` trusts only
lines a key of that file signed (``SshLedgerVerifier``, given to ``Promotions``), and ``gitsync audit
--allowed-signers`` marks each line.

Contract: a line never changes, so its seal is judged once per process (two ``ssh-keygen`` runs: find-principals,
then verify) and kept by the hash of the line; what a signature covers is ``gitsync.ledger.split_signature``.
Nothing secret is logged: a skipped line is named by its env, app and commit.

The allowed signers file is checked here before ``ssh-keygen`` reads it (``allowed_signers_problem``, the format of
``man ssh-keygen``, ALLOWED SIGNERS), again whenever it changes on disk: ``ssh-keygen`` exits 255 alike for a
broken file and for a signature no key of it made, so without the check a missing file or a typo in one line
would read as "every line is badly signed". A broken file is a ``SignersError`` naming the file and line instead,
logged once per problem (``ledger.allowed_signers_invalid``) and raised for every line until the file is fixed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from gitsync import log as logging
from gitsync.errors import TerminalError
from gitsync.ledger import SIGNATURE_NAMESPACE, LedgerEntry, Seal, SignersError, split_signature

__all__ = ["SshLedgerVerifier", "SshLineSigner", "allowed_signers_problem", "check_allowed_signers", "log_untrusted"]

TIMEOUT = 30.0
"""Seconds one ``ssh-keygen`` may take (it reads a key and a line: milliseconds)."""
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")

log = logging.get("gitsync.ledger_signature")

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
"""The public key types OpenSSH reads (``ssh -Q key``), each also as a certificate (``<type>-cert-v01@openssh.com``
without the domain of an ``sk-`` type, as OpenSSH names them)."""
_CERT = re.compile(r"^(?P<base>.+?)-cert-v01@openssh\.com$")
_TIMESTAMP = re.compile(r"^\d{8}(\d{4}(\d{2})?)?Z?$")
"""``valid-after``/``valid-before``: YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]."""
_OPTIONS = 'cert-authority, namespaces="...", valid-after="...", valid-before="..."'
_OPTION_NAMES = frozenset({"cert-authority", "namespaces", "valid-after", "valid-before"})
_OPTION = re.compile(r'(?P<name>[A-Za-z-]+)(="(?P<value>[^"]*)")?(,(?=.)|$)')


def _key_type(name: str) -> bool:
    cert = _CERT.match(name)
    base = cert["base"] if cert else name
    return base in KEY_TYPES or (cert is not None and f"{base}@openssh.com" in KEY_TYPES)


def _token(text: str) -> tuple[str, str]:
    """The first field of ``text`` and the rest after its spaces; a field may hold spaces inside double quotes
    (options, as ``ssh-keygen`` reads them). Raises ValueError for an unclosed quote."""
    i, quoted = 0, False
    while i < len(text) and (quoted or text[i] not in " \t"):
        quoted ^= text[i] == '"'
        i += 1
    if quoted:
        raise ValueError("a double quote is not closed")
    return text[:i], text[i:].lstrip(" \t")


def _options_problem(options: str) -> str:
    """Why ``options`` (comma-separated; values in double quotes) is not what ``ssh-keygen`` accepts ("" if it is)."""
    at = 0
    while at < len(options):
        found = _OPTION.match(options, at)
        if found is None:
            shown = options[at:].split(",", 1)[0].split("=", 1)[0]
            if options[at + len(shown) :].startswith("="):
                return f'{shown}: the value must be in double quotes, like {shown}="..."'
            return f"cannot read {options[at:]!r} (allowed: {_OPTIONS})"
        option, value = found["name"].lower(), found["value"]
        if (value is None) != (option == "cert-authority") or option not in _OPTION_NAMES:
            return f"unknown option {found[0].rstrip(',')!r} (allowed: {_OPTIONS})"
        if option.startswith("valid-") and not _TIMESTAMP.match(value):
            return f"{found['name']}: {value!r} is not YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]"
        at = found.end()
    return ""


def _key_problem(key_type: str, rest: str) -> str:
    """Why ``key_type`` and the base64 key at the start of ``rest`` are not a public key ("" if they are)."""
    blob_text = rest.split(maxsplit=1)[0] if rest.strip() else ""
    if not blob_text:
        return f"key: {key_type} without its base64 key"
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        return f"key: not valid base64 ({blob_text[:16]}...)"
    fields: list[bytes] = []
    at = 0
    while at + 4 <= len(blob) and (not fields or not _CERT.match(key_type)):
        size = int.from_bytes(blob[at : at + 4], "big")
        fields.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    if not fields or fields[0] != key_type.encode():
        return f"key: the base64 key is not a {key_type} key"
    if not _CERT.match(key_type) and (at != len(blob) or len(fields) < 2):
        return f"key: the base64 {key_type} key is cut short or has bytes past its end"
    return ""


def allowed_signers_problem(text: str) -> tuple[int, str] | None:
    """The first line of an allowed signers file that ``ssh-keygen`` would refuse, as (line number, "<field>:
    problem"), or (0, problem) when no line holds a key; None when the file is usable. Pure.

    Each line is ``principals [options] keytype base64-key [comment]``; empty lines and ``#`` lines are skipped
    (``man ssh-keygen``, ALLOWED SIGNERS)."""
    keys = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        principals, _, rest = line.replace("\t", " ").partition(" ")
        rest = rest.lstrip(" ")
        if _key_type(principals):
            return number, f"principals: missing (the line starts with the key type {principals})"
        if not rest:
            return number, "key: missing (expected: principals [options] keytype base64-key)"
        try:
            field, after = _token(rest)
            if not _key_type(field):
                options = field
                field, after = _token(after)
                if not _key_type(field):
                    shown = options if not field else f"{options} {field}"
                    return (
                        number,
                        f"keytype: no key type in {shown!r} (expected: principals [options] keytype base64-key)",
                    )
                problem = _options_problem(options)
                if problem:
                    return number, f"options: {problem}"
        except ValueError as e:
            return number, f"options: {e}"
        problem = _key_problem(field, after)
        if problem:
            return number, problem
        keys += 1
    return None if keys else (0, "no key in it (lines: principals [options] keytype base64-key)")


def check_allowed_signers(path: Path) -> None:
    """Raises ``SignersError`` (``<path>:<line>: <field>: <problem>``) when ``path`` is no usable allowed signers
    file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SignersError(f"{path}: cannot read the allowed signers file: {reason}") from e
    found = allowed_signers_problem(text)
    if found is not None:
        number, problem = found
        raise SignersError(f"{path}:{number}: {problem}" if number else f"{path}: {problem}")


def _keygen(*args: str, data: str = "") -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args], input=data, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TerminalError(f"ssh-keygen {' '.join(args[:2])}: {e}") from e


class SshLineSigner:
    """The signature of a line with the agent's SSH key (``repo.write.signingKeyFile``): the base64 body of
    ``ssh-keygen -Y sign``'s armored output, one line. ``owns`` tells a line this key signed from any other."""

    def __init__(self, key: Path) -> None:
        self._key = key
        self._public = ""
        self._lock = threading.Lock()

    def owns(self, line: str) -> bool:
        """Whether ``line`` carries a signature of this key, over the line as it is (``_seal_of`` with an allowed
        signers file naming this key alone: the one verification of ``SshLedgerVerifier``)."""
        with tempfile.TemporaryDirectory(prefix="gitsync-own-") as scratch:
            allowed = Path(scratch) / "allowed_signers"
            allowed.write_text(f'gitsync namespaces="{SIGNATURE_NAMESPACE}" {self._public_key()}\n')
            return _seal_of(line, allowed) is Seal.VERIFIED

    def _public_key(self) -> str:
        with self._lock:
            if not self._public:
                done = _keygen("-y", "-f", str(self._key))
                key = " ".join(done.stdout.split()[:2])
                if done.returncode != 0 or not key:
                    problem = done.stderr.strip().splitlines()[-1:] or ["no public key"]
                    raise TerminalError(f"{self._key}: cannot read the signing key's public key: {problem[0]}")
                self._public = key
            return self._public

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
        self._checked: tuple[tuple[int, int, int] | None, SignersError | None] | None = None
        self._logged: set[str] = set()

    def check(self) -> None:
        """Raises ``SignersError`` while the allowed signers file is not usable (``check_allowed_signers``, read
        again when the file changes on disk; seals judged with an earlier version are forgotten then). Each
        distinct problem is logged once (``ledger.allowed_signers_invalid``) unless ``report`` is None."""
        try:
            st = self._allowed.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            checked = self._checked
        if checked is None or checked[0] != stamp or stamp is None:
            try:
                check_allowed_signers(self._allowed)
                problem = None
            except SignersError as e:
                problem = e
            with self._lock:
                if checked is not None and checked[0] != stamp:
                    self._seals.clear()  # other keys now: every line is judged again
                self._checked = checked = (stamp, problem)
        if checked[1] is None:
            return
        with self._lock:
            first = str(checked[1]) not in self._logged
            self._logged.add(str(checked[1]))
        if first and self._report is not None:  # a command (report None) prints the error itself
            log.error("ledger.allowed_signers_invalid", error=str(checked[1]))
        raise SignersError(str(checked[1]))

    def seal(self, entry: LedgerEntry) -> Seal:
        """Raises ``SignersError`` when the allowed signers file is not usable (``check``)."""
        self.check()
        key = hashlib.sha256(entry.line.encode()).digest()
        with self._lock:
            known = self._seals.get(key)
        if known is not None:
            return known
        seal = _seal_of(entry.line, self._allowed)
        with self._lock:
            first = key not in self._seals
            self._seals[key] = seal
        if first and seal is not Seal.VERIFIED and self._report is not None:
            self._report(entry, seal)
        return seal


def _seal_of(line: str, allowed: Path) -> Seal:
    """What the signature of ``line`` says against the allowed signers file ``allowed`` (two ``ssh-keygen``
    runs: find-principals, then verify for each principal found)."""
    try:
        payload, signature = split_signature(line)
    except ValueError:
        return Seal.BAD
    if not signature:
        return Seal.UNSIGNED
    with tempfile.TemporaryDirectory(prefix="gitsync-sig-") as scratch:
        armored = Path(scratch) / "line.sig"
        armored.write_text(f"{_ARMOR[0]}\n{signature}\n{_ARMOR[1]}\n")
        found = _keygen("-Y", "find-principals", "-s", str(armored), "-f", str(allowed))
        for principal in found.stdout.splitlines() if found.returncode == 0 else ():
            checked = _keygen(
                "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", SIGNATURE_NAMESPACE,
                "-s", str(armored), data=payload,
            )  # fmt: skip
            if checked.returncode == 0:
                return Seal.VERIFIED
    return Seal.BAD
