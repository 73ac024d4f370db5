"""Reading a receiving environment's promotion settings and pins for the ``promote``/``rollback`` commands.

Stand-ins, pure apart from reading files: ``renderers.environment.Environment.promotion`` and
``renderers.promotion`` (``load_pins``, ``promoted_values``, ``values_hash``) replace them once merged; the
shapes here are the same (``promotion: {from, mode, soak, values}`` in env.yaml, promoted.yaml as written by
``gitsync.promoted_file``). ``values_hash`` must equal the agent's, or no pin verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from gitsync.errors import TerminalError
from gitsync.model import parse_duration


class PinningError(TerminalError):
    """env.yaml or promoted.yaml cannot be read as a promotion; the message names the file."""


@dataclass(frozen=True, slots=True)
class Promotion:
    from_env: str
    soak_seconds: float
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pin:
    app: str
    revision: str
    from_env: str
    values: Mapping[str, Any]


def promotion_settings(env_yaml: str, where: str) -> Promotion | None:
    """The ``promotion:`` block of an env.yaml's text (None: the environment follows the branch head)."""
    data = yaml.safe_load(env_yaml) or {}
    block = data.get("promotion") if isinstance(data, dict) else None
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("from"), str):
        raise PinningError(f"{where}: promotion: expected a mapping with from: <environment>")
    try:
        soak = parse_duration(block.get("soak", 0))
    except ValueError as e:
        raise PinningError(f"{where}: promotion.soak: {e}") from None
    values = block.get("values", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PinningError(f"{where}: promotion.values: expected a list of dotted paths")
    return Promotion(block["from"], soak, tuple(values))


def load_pins(text: str | None, where: str) -> dict[str, Pin]:
    """The pins of a promoted.yaml's text (None: no file)."""
    data = yaml.safe_load(text) if text else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PinningError(f"{where}: expected a mapping of apps to pins")
    pins = {}
    for app, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("revision"), str):
            raise PinningError(f"{where}: {app}: expected revision, from and values")
        pins[str(app)] = Pin(str(app), entry["revision"], str(entry.get("from", "")), entry.get("values") or {})
    return pins


def promoted_values(values: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """The subtree of ``values`` at each dotted path (paths absent from ``values`` are left out)."""
    out: dict[str, Any] = {}
    for path in paths:
        keys = path.split(".")
        node: Any = values
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            target = out
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = node
    return out


def values_hash(values: Mapping[str, Any]) -> str:
    """``sha256:`` of the canonical JSON of the promoted values."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted path -> scalar text, for a commit body's "what changed" lines."""
    out = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = json.dumps(value) if not isinstance(value, str) else value
    return out
