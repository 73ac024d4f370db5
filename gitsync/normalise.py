"""The comparison form of an object, and how a difference is shown: pure, no I/O.

Drift is "the server-side dry-run result differs from live" after both are normalised: ``normalise`` drops what
the server owns (``status``, ``managedFields``, ``resourceVersion`` ...) and the JSON pointers a manifest asks to
ignore (``gitsync.dev/ignore-differences``). ``diff_text`` shows a difference as ``kubectl diff`` does, with every
Secret value replaced by a keyed hash (``mask_secret``), so a change stays visible and no value is ever shown.
Used by the plan stage (``gitsync.plan``), the dry-run memo (``gitsync.memo``), drift detection and the rollout
executor.
"""

from __future__ import annotations

import base64
import copy
import difflib
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from gitsync.model import ANNOTATION_IGNORE, SERVER_OWNED_METADATA, Json, ObjectId, split_pointers

__all__ = [
    "MASK",
    "SERVER_OWNED_ANNOTATIONS",
    "SERVER_OWNED_METADATA",
    "diff_text",
    "ignored_pointers",
    "is_secret",
    "mask_secret",
    "normalise",
]

SERVER_OWNED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
)
MASK = "*** (masked)"

_MASK_KEY = os.urandom(16)
"""Per-process key for the Secret value hashes in diffs: a change stays visible, but a short password cannot be
found by hashing guesses, and hashes cannot be compared across runs."""


def ignored_pointers(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """JSON pointers listed in the ``gitsync.dev/ignore-differences`` annotation (comma- or newline-separated)."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_IGNORE, "")
    return split_pointers(raw)


def normalise(obj: Json | None, ignore: Sequence[str] = ()) -> Json:
    """``obj`` without what the server owns or the user asked to ignore; {} for None.

    Shares nested values with ``obj`` (only the top level and ``metadata`` are copied, a deep copy only when
    there are fields to ignore): this runs for every object of every plan, so treat the result as read-only.
    """
    if obj is None:
        return {}
    out = copy.deepcopy(obj) if ignore else dict(obj)
    out.pop("status", None)
    meta = dict(out.get("metadata") or {})
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)
    if "annotations" in meta:
        annotations = {k: v for k, v in (meta["annotations"] or {}).items() if k not in SERVER_OWNED_ANNOTATIONS}
        if annotations:
            meta["annotations"] = annotations
        else:
            del meta["annotations"]
    out["metadata"] = meta
    for pointer in ignore:
        _remove_pointer(out, pointer)
    return out


def _remove_pointer(obj: Any, pointer: str) -> None:
    """Delete the value at a JSON pointer (RFC 6901) if present; a missing path is not an error."""
    if not pointer.startswith("/"):
        return
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    for part in parts[:-1]:
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return
    last = parts[-1]
    if isinstance(obj, dict):
        obj.pop(last, None)
    elif isinstance(obj, list) and last.isdigit() and int(last) < len(obj):
        del obj[int(last)]


def mask_secret(obj: Json) -> Json:
    """A copy of a Secret whose ``data``/``stringData`` values are replaced by ``*** (masked) <hash>``.

    ``stringData`` is hashed as its base64 form would be, so the same value hashes alike in both fields.
    Non-Secrets are returned unchanged.
    """
    if not is_secret(ObjectId.of(obj)):
        return obj
    out = dict(obj)
    for key in ("data", "stringData"):
        values = obj.get(key)
        if isinstance(values, dict):
            out[key] = {k: f"{MASK} {_value_hash(key, v)}" for k, v in values.items()}
    return out


def _value_hash(field_name: str, value: Any) -> str:
    raw = str(value).encode() if field_name == "stringData" else base64.b64decode(str(value) or "", validate=False)
    return hmac.new(_MASK_KEY, raw, hashlib.sha256).hexdigest()[:12]


def diff_text(
    ref: ObjectId, before: Json | None, after: Json | None, labels: tuple[str, str] = ("live", "desired")
) -> str:
    """A ``kubectl diff``-style unified diff of two normalised objects, Secret values masked. ``labels`` name the
    two sides in the file headers (``gitsync plan`` compares two commits: ``base`` and ``head``)."""
    old = _yaml(mask_secret(before)) if before else []
    new = _yaml(mask_secret(after)) if after else []
    return "".join(difflib.unified_diff(old, new, f"{labels[0]}/{ref}", f"{labels[1]}/{ref}", n=3))


def _yaml(obj: Json) -> list[str]:
    text: str = yaml.dump(obj, Dumper=_DUMPER, sort_keys=True, default_flow_style=False, allow_unicode=True)
    return text.splitlines(keepends=True)


_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter when PyYAML has it: the same text, a fraction of the pure-Python emitter's time."""


def is_secret(ref: ObjectId) -> bool:
    return ref.kind == "Secret" and not ref.group
