"""The render cache: an app-env is rendered again only when something it reads changed.

A render is a pure function of its inputs (``renderers.render``), so its output can be kept under a key made of
them: the Git ids (``renderers.inputs.content_id``) of the chart folder and of ``lib/`` as the render reads them
(a pinned app's: those of its pinned commit), of the environment's override file for the app, the parsed
``env.yaml`` (``Environment``), the pin (revision and promoted values), ``--set`` values, the protected
namespaces, and the revision only when the chart's templates may read it (``renderers.inputs.uses_revision``):
so a commit that touched another app re-renders nothing here. The key also holds ``CODE_ID``, the id of the
renderer's own source, so an upgraded gitsync never reads what an older renderer made.

Only successful renders are kept (a failed render raises before anything is stored), and a hit is the very
output of the render that stored it: ``decode(encode(x))`` is ``x``, checked by the tests byte for byte.

``MemoryRenderCache`` is the agent's: one slot per app-env (the newest render replaces the older), so it holds
at most one output per app-env it serves. The command line's is ``StoredRenderCache`` over bytes kept on disk
(``gitsync.adapters.render_cache.DiskBlobs``): an entry that does not decode is a miss. Pure; no I/O besides
reading the renderer's own source once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from gitsync.model import AppEnv, Manifest, ObjectId

__all__ = [
    "CODE_ID",
    "Blobs",
    "MemoryRenderCache",
    "RenderCache",
    "RenderOutput",
    "StoredRenderCache",
    "decode",
    "encode",
    "render_key",
]

_FORMAT = 1
"""The layout of ``encode``'s bytes; part of every key."""


def _code_id() -> str:
    """The id of the renderer's source and of the manifest model it builds (what a render's output depends on
    besides its inputs)."""
    h = hashlib.sha256(str(_FORMAT).encode())
    here = Path(__file__).resolve().parent
    for source in [*sorted(here.glob("*.py")), here.parent / "gitsync" / "model.py"]:
        h.update(source.name.encode() + b"\x00" + source.read_bytes())
    return h.hexdigest()[:32]


CODE_ID = _code_id()


@dataclass(frozen=True, slots=True)
class RenderOutput:
    """What a render produced, apart from what its caller already holds (environment, pin, revision)."""

    values: Mapping[str, Any]
    manifests: tuple[Manifest, ...]
    digest: str
    """``renderers.manifests.digest`` of ``manifests``, kept so that a hit does not encode them all again."""


class RenderCache(Protocol):
    """Where render outputs are kept by key (``render_key``). ``get`` returns None for anything it cannot vouch
    for (absent, unreadable, corrupt); ``put`` may drop the output (over its bound, not JSON-ready)."""

    def get(self, app_env: AppEnv, key: str) -> RenderOutput | None: ...

    def put(self, app_env: AppEnv, key: str, output: RenderOutput) -> None: ...


def render_key(parts: Mapping[str, Any]) -> str:
    """The key of a render: a hash of the canonical JSON of ``parts`` (the inputs named in the module doc)."""
    text = json.dumps({"code": CODE_ID, **parts}, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | frozenset | set):
        return sorted(value) if isinstance(value, frozenset | set) else list(value)
    raise TypeError(f"not part of a render key: {type(value).__name__}")


class MemoryRenderCache:
    """The agent's cache: the newest output of each app-env, replaced when its key changes. Thread-safe."""

    def __init__(self) -> None:
        self._slots: dict[AppEnv, tuple[str, RenderOutput]] = {}
        self._lock = threading.Lock()

    def get(self, app_env: AppEnv, key: str) -> RenderOutput | None:
        with self._lock:
            slot = self._slots.get(app_env)
        return slot[1] if slot is not None and slot[0] == key else None

    def put(self, app_env: AppEnv, key: str, output: RenderOutput) -> None:
        with self._lock:
            self._slots[app_env] = (key, output)


class Blobs(Protocol):
    """Bytes by key (``gitsync.adapters.render_cache.DiskBlobs``): ``read`` is None for a missing or damaged
    entry, ``write`` may drop what it cannot keep."""

    def read(self, key: str) -> bytes | None: ...

    def write(self, key: str, body: bytes) -> None: ...

    def discard(self, key: str) -> None: ...


class StoredRenderCache:
    """A ``RenderCache`` over ``Blobs``: outputs are kept as ``encode``'s bytes, keyed by the render key alone."""

    def __init__(self, blobs: Blobs) -> None:
        self._blobs = blobs

    def get(self, app_env: AppEnv, key: str) -> RenderOutput | None:
        data = self._blobs.read(key)
        if data is None:
            return None
        try:
            return decode(data)
        except (ValueError, KeyError, TypeError):
            self._blobs.discard(key)
            return None

    def put(self, app_env: AppEnv, key: str, output: RenderOutput) -> None:
        data = encode(output)
        if data is not None:
            self._blobs.write(key, data)


def encode(output: RenderOutput) -> bytes | None:
    """The output as JSON text, or None when it would not come back equal (values with non-text keys, say)."""
    values = _jsonable(output.values)
    if values is None:
        return None
    manifests = [
        [m.id.group, m.id.kind, m.id.namespace, m.id.name, m.source, m.fingerprint, m.body] for m in output.manifests
    ]
    try:
        text = json.dumps(
            {"values": values, "manifests": manifests, "digest": output.digest},
            ensure_ascii=False,
            separators=(",", ":"),
        )
    except (TypeError, ValueError):
        return None
    return text.encode()


def decode(data: bytes) -> RenderOutput:
    """``encode``'s bytes back; ``ValueError`` (or ``KeyError``/``TypeError``) for anything else."""
    raw = json.loads(data)
    manifests = tuple(
        Manifest(ObjectId(group, kind, namespace, name), body, source, fp)
        for group, kind, namespace, name, source, fp, body in raw["manifests"]
    )
    if not all(isinstance(m.body, dict) and m.fingerprint for m in manifests) or not isinstance(raw["values"], dict):
        raise ValueError("not a render output")
    if not isinstance(raw["digest"], str) or not raw["digest"].startswith("sha256:"):
        raise ValueError("not a render output")
    return RenderOutput(raw["values"], manifests, raw["digest"])


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types when it round-trips through JSON unchanged; None otherwise."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                return None
            inner = _jsonable(v)
            if inner is None and v is not None:
                return None
            out[k] = inner
        return out
    if isinstance(value, list):
        items = [_jsonable(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value, strict=True)) else items
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return None
